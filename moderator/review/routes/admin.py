"""Admin routes: the audit log, the security log, API tokens, hash banks and the metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from moderator.review.auth import NewUser, issue_user_token
from moderator.review.banks import BankChange, BankEntryFields, BankHashEntry, BankView
from moderator.review.models import AuditAction, AuditEntry, Role
from moderator.review.routes.deps import Admin, BankHash, BankName, Caller, Context, StreamId, TokenId, json_body
from moderator.review.routes.deps import admin as require_admin
from moderator.review.tokens import TokenRecord

router = APIRouter()


class Me(BaseModel):
    """The caller, as the UI shows it."""

    name: str
    role: Role


class AuditPage(BaseModel):
    """A page of the audit log, newest first; ``next`` fetches the older entries."""

    entries: list[AuditEntry]
    next: str | None


class NewToken(BaseModel):
    """A freshly issued token: shown this once, never again."""

    record: TokenRecord
    token: str


@router.get("/api/me")
async def me(caller: Caller) -> Me:
    """Who is calling."""
    return Me(name=caller.name, role=caller.role)


@router.get("/api/audit")
async def audit(admin: Admin, context: Context, limit: Annotated[int, Query(ge=1, le=1000)] = 200,
                before: Annotated[str | None, Query(pattern=StreamId)] = None) -> AuditPage:
    """The audit log, newest first (admins only)."""
    entries, next_page = await context.audit.recent(limit, before)
    return AuditPage(entries=entries, next=next_page)


@router.get("/api/security-log")
async def security_log(admin: Admin, context: Context, limit: Annotated[int, Query(ge=1, le=1000)] = 200,
                       before: Annotated[str | None, Query(pattern=StreamId)] = None) -> AuditPage:
    """Failed sign-ins and refused tokens, newest first (admins only)."""
    entries, next_page = await context.audit.recent(limit, before, security=True)
    return AuditPage(entries=entries, next=next_page)


@router.get("/api/tokens")
async def tokens(admin: Admin, context: Context) -> list[TokenRecord]:
    """Every live API token (never the secrets), oldest first."""
    return await context.auth.tokens.list()


@router.post("/api/tokens", status_code=201)
async def issue_token(admin: Admin, context: Context,
                      user: Annotated[NewUser, Depends(json_body(NewUser, require_admin))]) -> NewToken:
    """Issue a token for a new or existing account; the answer holds the token, once."""
    try:
        issued = await issue_user_token(context.auth.tokens, user)
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from exc
    await context.audit.record(admin.name, AuditAction.TOKEN_ISSUE,
                               f"{issued.record.token_id} for {user.name} ({user.role.value})")
    return NewToken(record=issued.record, token=issued.token.get_secret_value())


@router.delete("/api/tokens/{token_id}")
async def revoke_token(token_id: TokenId, admin: Admin, context: Context) -> TokenRecord:
    """Revoke a token at once; the sessions opened with it end too."""
    record = await context.auth.tokens.revoke(token_id)
    if record is None:
        raise HTTPException(404, "no such token")
    await context.audit.record(admin.name, AuditAction.TOKEN_REVOKE, f"{token_id} of {record.subject}")
    return record


@router.get("/metrics")
async def metrics(admin: Admin, context: Context) -> Response:
    """The review app's Prometheus metrics (scrape with an admin token)."""
    return Response(context.auth.metrics.render(), media_type="text/plain; version=0.0.4")


@router.get("/api/banks")
async def banks(admin: Admin, context: Context) -> list[BankView]:
    """Every hash bank with its entries (admins only)."""
    return await context.banks.banks()


@router.post("/api/banks/{bank}/entries")
async def add_bank_entry(bank: BankName, request: Request, admin: Admin, context: Context) -> BankChange:
    """Bank an image (multipart: ``image``, ``kind``, ``label``) or a hash (JSON: ``hash``, ``kind``, ``label``).

    ``kind`` creates the bank on first use; without it the bank must exist. Admins only.
    """
    try:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form(max_files=1, max_fields=4)
            upload = form.get("image")
            if not isinstance(upload, UploadFile):
                raise HTTPException(422, "multipart upload needs an 'image' file")
            fields = BankEntryFields.model_validate(
                {k: v for k, v in form.multi_items() if k in ("kind", "label") and v})
            return await context.banks.add_image(bank, await upload.read(), fields, admin.name)
        entry = BankHashEntry.model_validate_json(await request.body() or b"{}")
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_input=False)) from exc
    return await context.banks.add_hash(bank, entry, admin.name)


@router.delete("/api/banks/{bank}/entries/{digest}")
async def remove_bank_entry(bank: BankName, digest: BankHash, admin: Admin, context: Context) -> BankChange:
    """Remove an entry from a bank (404 when it is not banked). Admins only."""
    return await context.banks.remove(bank, digest, admin.name)
