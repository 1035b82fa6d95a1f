"""Hash banks of known content (Hasher-Matcher-Actioner): hash a post's image, match it against banks in Redis."""
