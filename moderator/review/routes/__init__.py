"""The review app's routes, one APIRouter per area; authentication comes in as dependencies (`deps`)."""
