"""The content library: Kiwix ZIM archives and OER packs, stored, searched, served and synced.

Owns: the content store (files addressed by SHA-256 on `[content] root`, which may be a USB
drive, indexed in `appliance.db`), the library index (items, their files and their state), ZIM
and pack serving on the archive origin (`[content] archive_port`, a separate origin under a
sandboxing CSP), one search across all content (SQLite FTS5 with English and Russian stems, plus
libzim's own indexes), the library's front page on the portal, the catalog readers (Kiwix OPDS,
metalinks, `.sha256` files, our own pack and bundle manifests), the persistent job queue and its
resumable downloader, usage counts per item per day, and `appliance content ...`.

Offers to other capabilities (the Moodle mirror first):
- `store`: `ContentStore` (put files by SHA-256, atomically; whether the root is present);
- `jobs`: the persistent job queue (`JobQueue`) and `download` its resumable, verifying fetcher;
- `search`: `index_document`/`remove_documents` to put pages in the one search box, `search`;
- `origin`: the WSGI app of the archive origin, which the portal process serves;
- `search_page`: the search page's hot path, which the portal app puts in front of itself.
"""

OFFERS = ("store", "jobs", "download", "search", "origin", "search_page")
