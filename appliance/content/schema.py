"""The content library's tables in `appliance.db` (component `content`).

- `content_blobs`: every stored file, by SHA-256 (the file is `<root>/blobs/<sha[:2]>/<sha>`).
- `content_items`: the library: one row per archive (`zim`) or pack (`pack`), with the blob of
  an archive, its state (`ok`, `bad`: failed a check and is not served) and why.
- `content_files`: the files of a pack (path inside the pack -> blob).
- `content_fts` + `content_docs`: the search index; `content_fts` holds stems only, `content_docs`
  the original title and text for snippets (same rowid).
- `content_usage`: views per item per day (never per student).
- `content_jobs`: the download queue (survives restarts).
- `content_state`: small facts (`last_sync` ms, `library_id`).
- `content_refs`: blobs another capability keeps in the store (the Moodle mirror's files), by
  owner: the library's garbage collection keeps every blob with a reference, and an owner's
  `release` deletes only blobs it referenced that nothing else refers to.
"""

from __future__ import annotations

from appliance.store import Migration

COMPONENT = "content"
DATABASE = "appliance"

MIGRATIONS = [
    Migration(1, "library, store, search, usage, jobs", """
CREATE TABLE content_blobs (
    sha256 TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    added_at INTEGER NOT NULL
);
CREATE TABLE content_items (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('zim', 'pack')),
    title TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    language TEXT NOT NULL DEFAULT '',
    subject TEXT NOT NULL DEFAULT '',
    sha256 TEXT REFERENCES content_blobs(sha256),
    size INTEGER NOT NULL DEFAULT 0,
    index_page TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'ok' CHECK (state IN ('ok', 'bad')),
    problem TEXT,
    source TEXT NOT NULL DEFAULT '',
    version TEXT NOT NULL DEFAULT '',
    added_at INTEGER NOT NULL,
    verified_at INTEGER
);
CREATE TABLE content_files (
    item TEXT NOT NULL REFERENCES content_items(name) ON DELETE CASCADE,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL REFERENCES content_blobs(sha256),
    size INTEGER NOT NULL,
    mimetype TEXT NOT NULL,
    PRIMARY KEY (item, path)
);
CREATE INDEX content_files_sha ON content_files(sha256);
CREATE VIRTUAL TABLE content_fts USING fts5(title, body, tokenize = 'unicode61 remove_diacritics 2');
CREATE TABLE content_docs (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    item TEXT NOT NULL,
    path TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (source, item, path)
);
CREATE INDEX content_docs_item ON content_docs(source, item);
CREATE TABLE content_usage (
    item TEXT NOT NULL,
    day TEXT NOT NULL,
    views INTEGER NOT NULL,
    PRIMARY KEY (item, day)
);
CREATE TABLE content_jobs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    url TEXT NOT NULL,
    sha256 TEXT,
    size INTEGER,
    pieces TEXT,
    meta TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at INTEGER NOT NULL DEFAULT 0,
    done_bytes INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX content_jobs_state ON content_jobs(state, next_at);
CREATE TABLE content_state (key TEXT PRIMARY KEY, value);
"""),
    Migration(2, "references to blobs held by other capabilities (the Moodle mirror)", """
CREATE TABLE content_refs (
    owner TEXT NOT NULL,
    sha256 TEXT NOT NULL REFERENCES content_blobs(sha256),
    PRIMARY KEY (owner, sha256)
);
CREATE INDEX content_refs_sha ON content_refs(sha256);
"""),
]
