"""The mirror's tables in the appliance database, as ordered migrations (component "moodle").

A course's rows (sections, modules, chapters, files) are replaced together in one transaction
per sync, so the portal reads either the old version of a course or the new one, never a mix.
`moodle_raw` keeps Moodle's HTML as received (no token is in it) so a change of the sanitizer
re-renders without a resync; it is never served.
"""

from __future__ import annotations

from appliance.store import Migration

COMPONENT = "moodle"
DATABASE = "appliance"

MIGRATIONS = [
    Migration(
        1,
        "mirrored courses, sections, modules, chapters, files; raw HTML; sync status",
        """
        CREATE TABLE moodle_courses (
            id INTEGER PRIMARY KEY,
            shortname TEXT NOT NULL,
            fullname TEXT NOT NULL,
            summary_html TEXT NOT NULL,
            timemodified INTEGER NOT NULL,
            position INTEGER NOT NULL,
            moodle_path TEXT NOT NULL,
            synced_at REAL NOT NULL,
            size INTEGER NOT NULL DEFAULT 0,
            model TEXT NOT NULL
        );
        CREATE TABLE moodle_sections (
            id INTEGER PRIMARY KEY,
            course_id INTEGER NOT NULL REFERENCES moodle_courses (id) ON DELETE CASCADE,
            number INTEGER NOT NULL,
            name TEXT NOT NULL,
            summary_html TEXT NOT NULL,
            position INTEGER NOT NULL
        );
        CREATE INDEX moodle_sections_course ON moodle_sections (course_id, position);
        CREATE TABLE moodle_modules (
            id INTEGER PRIMARY KEY,
            course_id INTEGER NOT NULL REFERENCES moodle_courses (id) ON DELETE CASCADE,
            section_id INTEGER NOT NULL,
            position INTEGER NOT NULL,
            modname TEXT NOT NULL,
            name TEXT NOT NULL,
            listed INTEGER NOT NULL,
            available INTEGER NOT NULL,
            availability_html TEXT NOT NULL,
            description_html TEXT NOT NULL,
            content_html TEXT NOT NULL,
            external_url TEXT NOT NULL,
            moodle_path TEXT NOT NULL
        );
        CREATE INDEX moodle_modules_course ON moodle_modules (course_id, section_id, position);
        CREATE TABLE moodle_chapters (
            module_id INTEGER NOT NULL REFERENCES moodle_modules (id) ON DELETE CASCADE,
            chapter_id INTEGER NOT NULL,
            position INTEGER NOT NULL,
            level INTEGER NOT NULL,
            title TEXT NOT NULL,
            html TEXT NOT NULL,
            timemodified INTEGER NOT NULL,
            raw_sha256 TEXT NOT NULL,
            PRIMARY KEY (module_id, chapter_id)
        );
        CREATE TABLE moodle_files (
            module_id INTEGER NOT NULL REFERENCES moodle_modules (id) ON DELETE CASCADE,
            path TEXT NOT NULL,
            mimetype TEXT NOT NULL,
            size INTEGER NOT NULL,
            timemodified INTEGER NOT NULL,
            sha1 TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            PRIMARY KEY (module_id, path)
        );
        CREATE INDEX moodle_files_blob ON moodle_files (sha256);
        CREATE TABLE moodle_raw (
            course_id INTEGER NOT NULL,
            kind TEXT NOT NULL,
            item_id INTEGER NOT NULL,
            sub_id INTEGER NOT NULL DEFAULT 0,
            raw TEXT NOT NULL,
            PRIMARY KEY (course_id, kind, item_id, sub_id)
        );
        CREATE TABLE moodle_sync (
            course_id INTEGER PRIMARY KEY,
            fullname TEXT NOT NULL DEFAULT '',
            last_attempt REAL,
            last_success REAL,
            since INTEGER,
            error TEXT,
            bytes_received INTEGER NOT NULL DEFAULT 0,
            missing_since REAL
        );
        """,
    ),
    Migration(
        2,
        "sign-in to courses: offline password hashes and failed sign-ins",
        """
        CREATE TABLE moodle_signins (
            username TEXT PRIMARY KEY,
            password_hash TEXT NOT NULL,
            courses TEXT NOT NULL,
            signed_in_at REAL NOT NULL
        );
        CREATE TABLE moodle_signin_failures (
            key TEXT PRIMARY KEY,
            failures INTEGER NOT NULL,
            window_start REAL NOT NULL
        );
        """,
    ),
]
