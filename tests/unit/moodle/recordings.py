"""The recorded Moodle answers (data/moodle), parsed the way the mirror parses them."""

from __future__ import annotations

import json
from typing import Any

from appliance.moodle.model import Course, Instances, parse_course
from tests.conftest import SHARED

DATA = SHARED / "data" / "moodle"
SITE = "http://moodle.example"


def answers(state: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    with (DATA / state / "exchanges.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            ex = json.loads(line)
            if ex["body"]["kind"] == "json":
                found.setdefault(ex["label"], ex["body"]["json"])
    return found


def course(state: str, cid: int) -> Course:
    a = answers(state)
    entry = next(c for c in a["core_enrol_get_users_courses"] if c["id"] == cid)
    instances = Instances.from_lists(
        a["mod_page_get_pages_by_courses"]["pages"],
        a["mod_book_get_books_by_courses"]["books"],
        a["mod_resource_get_resources_by_courses"]["resources"],
        a["mod_folder_get_folders_by_courses"]["folders"],
        a["mod_url_get_urls_by_courses"]["urls"],
        a["mod_label_get_labels_by_courses"]["labels"],
    )
    return parse_course(entry, a[f"core_course_get_contents:{cid}"], instances, SITE)
