"""Policy decisions: groups, canaries, SafeSearch, schedules, exams, overrides, clock trust,
explain; and the persisted state (exams and overrides survive a new Store, changes audited)."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from appliance import config
from appliance.filter import lists, policy
from appliance.filter.lists import Source
from appliance.filter.policy import State
from appliance.filter.state import Store
from appliance.store import open_db
from tests.unit.filter.conftest import UT1

TZ = ZoneInfo("Europe/Paris")
# Tuesday 2026-09-08, 10:00 in Paris: a lesson; 19:00 is not.
LESSON = datetime(2026, 9, 8, 10, 0, tzinfo=TZ).timestamp()
EVENING = datetime(2026, 9, 8, 19, 0, tzinfo=TZ).timestamp()


@pytest.fixture(scope="module")
def matcher(tmp_path_factory):
    out = tmp_path_factory.mktemp("lists") / "lists.bin"
    sources = lists.ut1_sources(UT1, ["gambling", "social_networks", "mixed_adult", "doh"])
    parsed = [(s, lists.read_source(s)) for s in sources]
    parsed.append((Source("adult", "synthetic"), ["adult-synthetic.example", "porn.test"]))
    lists.compile_lists(parsed, out)
    return lists.Matcher.open(out)


def first(category):
    return next(n for n in (lists.normalize(line) for line in (UT1 / category / "domains").open()) if n)


def make(**section):
    cfg = config.from_dict({"appliance": {"id": "t"}, "filter": {"timezone": "Europe/Paris", **section}})
    return policy.from_section(cfg.filter)


def decide(pol, matcher, name, group="students", now=LESSON, state=None, trusted=True):
    act = policy.active(pol, group, state or State(), now, trusted)
    return policy.decide(pol, act, name, lambda n: matcher.names(matcher.mask(n)))


def test_defaults_out_of_the_box(matcher):
    pol = make()
    assert set(pol.groups) == {"students", "teachers", "staff", "guests", "displays"}
    d = decide(pol, matcher, "www.adult-synthetic.example")
    assert (d.action, d.category) == ("block", "adult")
    assert decide(pol, matcher, "sub." + first("gambling")).category == "gambling"
    assert decide(pol, matcher, "sub." + first("mixed_adult")).action == "block"
    assert decide(pol, matcher, "use-application-dns.net").action == "nxdomain"
    assert decide(pol, matcher, "mask.icloud.com").action == "nxdomain"
    assert decide(pol, matcher, "mask-h2.icloud.com").action == "nxdomain"
    assert decide(pol, matcher, "_dns.resolver.arpa").action == "nodata"
    ok = decide(pol, matcher, "en.wikipedia.org")
    assert ok.action == "forward" and ok.ttl_cap == 60 and ok.inspect
    # Staff are not blocked from gambling sites by default; teachers keep adult blocked.
    assert decide(pol, matcher, first("gambling"), "staff").action == "forward"
    assert decide(pol, matcher, "porn.test", "teachers").action == "block"


@pytest.mark.parametrize(("name", "target"), [
    ("www.google.com", "forcesafesearch.google.com"),
    ("www.google.fr", "forcesafesearch.google.com"),
    ("www.google.co.uk", "forcesafesearch.google.com"),
    ("www.google.com.br", "forcesafesearch.google.com"),
    ("www.bing.com", "strict.bing.com"),
    ("duckduckgo.com", "safe.duckduckgo.com"),
    ("yandex.ru", "familysearch.yandex.ru"),
    ("www.youtube.com", "restrictmoderate.youtube.com"),
    ("m.youtube.com", "restrictmoderate.youtube.com"),
    ("youtubei.googleapis.com", "restrictmoderate.youtube.com"),
    ("www.youtube-nocookie.com", "restrictmoderate.youtube.com"),
])
def test_safesearch_for_students(matcher, name, target):
    d = decide(make(), matcher, name)
    assert (d.action, d.target) == ("rewrite", target)


def test_youtube_strict_per_group_and_off_for_staff(matcher):
    pol = make(groups=[{"name": "students", "youtube": "strict"}])
    assert decide(pol, matcher, "www.youtube.com").target == "restrict.youtube.com"
    assert decide(pol, matcher, "www.youtube.com", "staff").action == "forward"
    assert decide(pol, matcher, "maps.google.com").action == "forward"


def test_schedule_blocks_social_networks_in_lessons_only(matcher):
    pol = make(schedules=[{"group": "students", "categories": ["social_networks"],
                           "days": "mon-fri", "start": "08:00", "end": "12:00"}])
    social = first("social_networks")
    d = decide(pol, matcher, social, now=LESSON)
    assert d.action == "block" and "schedule" in d.reasons[-1]
    assert decide(pol, matcher, social, now=EVENING).action == "forward"
    assert decide(pol, matcher, social, "teachers", now=LESSON).action == "forward"
    # An untrusted clock: the strictest reading, the schedule is in force.
    assert decide(pol, matcher, social, now=EVENING, trusted=False).action == "block"


def test_exam_mode_allowlist_only_until_its_end(matcher):
    pol = make(exam_allow=["exam.example"])
    exam = policy.Exam("students", LESSON + 3600, frozenset({"moodle.school.example"}))
    st = State(exams=(exam,))
    assert decide(pol, matcher, "en.wikipedia.org", state=st).category == "exam"
    assert decide(pol, matcher, "www.moodle.school.example", state=st).action == "forward"
    assert decide(pol, matcher, "exam.example", state=st).action == "forward"
    assert decide(pol, matcher, "en.wikipedia.org", "teachers", state=st).action == "forward"
    assert decide(pol, matcher, "en.wikipedia.org", state=st, now=LESSON + 3601).action == "forward"
    # Untrusted clock: an exam not stopped is still running.
    assert decide(pol, matcher, "en.wikipedia.org", state=st, now=LESSON + 9999,
                  trusted=False).category == "exam"
    building = State(exams=(policy.Exam("*", LESSON + 60),))
    assert decide(pol, matcher, "en.wikipedia.org", "teachers", state=building).category == "exam"


def test_override_unblocks_for_its_group_until_it_ends(matcher):
    pol = make()
    g = first("gambling")
    st = State(overrides=(policy.Override(g, "students", LESSON + 1800),))
    assert decide(pol, matcher, "www." + g, state=st).action == "forward"
    assert decide(pol, matcher, "www." + g, "guests", state=st).action == "block"
    assert decide(pol, matcher, "www." + g, state=st, now=LESSON + 1801).action == "block"
    assert decide(pol, matcher, "www." + g, state=st, trusted=False).action == "block"


def test_allow_and_block_lists_and_filtering_off(matcher):
    pol = make(groups=[{"name": "students", "allow": [first("gambling")], "block": ["tiktok.com"]},
                       {"name": "staff", "filtering": False}])
    assert decide(pol, matcher, first("gambling")).action == "forward"
    assert decide(pol, matcher, "www.tiktok.com").category == "blocklist"
    assert decide(pol, matcher, "porn.test", "staff").action == "forward"
    assert decide(pol, matcher, "use-application-dns.net", "staff").action == "nxdomain"


def test_membership_by_mac_range_and_randomized_macs():
    pol = make(groups=[{"name": "teachers", "macs": ["00:11:22:33:44:55"]},
                       {"name": "displays", "ranges": ["10.0.9.0/24", "2001:db8:9::/64"]}])
    assert pol.group_for("00-11-22-33-44-55", "10.0.0.5")[0] == "teachers"
    assert pol.group_for(None, "10.0.9.7")[0] == "displays"
    assert pol.group_for(None, "2001:db8:9::1234")[0] == "displays"
    g, why = pol.group_for("02:aa:bb:cc:dd:ee", "10.0.0.5")
    assert g == "students" and "randomized" in why
    assert pol.group_for("00:99:99:99:99:99", None)[0] == "students"


def test_explain_gives_every_reason(matcher):
    pol = make(groups=[{"name": "teachers", "macs": ["00:11:22:33:44:55"]}])
    out = policy.explain(pol, State(), "WWW.Porn.Test.", lambda n: matcher.names(matcher.mask(n)),
                         LESSON, True, mac="00:11:22:33:44:55")
    assert out["group"] == "teachers" and out["action"] == "block" and out["category"] == "adult"
    assert "teachers" in out["reasons"][0] and "adult" in out["reasons"][-1]
    with pytest.raises(policy.PolicyError, match="unknown group"):
        policy.explain(pol, State(), "x.example", lambda n: [], LESSON, True, group="nobody")


def test_config_errors_name_the_key():
    with pytest.raises(config.ConfigError, match=r"filter.schedules\[0\].group: unknown group"):
        make(schedules=[{"group": "nobody", "categories": ["x"]}])
    with pytest.raises(config.ConfigError, match=r"filter.schedules\[0\].start: must be a time"):
        make(schedules=[{"group": "students", "categories": ["x"], "start": "8h"}])
    with pytest.raises(config.ConfigError, match=r"filter.groups\[0\].macs\[0\]"):
        make(groups=[{"name": "students", "macs": ["nope"]}])
    with pytest.raises(config.ConfigError, match=r"filter\.timezone"):
        make(timezone="Mars/Olympus")


def test_state_survives_a_new_store_and_is_audited(tmp_path):
    path = tmp_path / "appliance.db"
    s = Store(open_db(path))
    v0 = s.version()
    s.start_exam("students", LESSON + 600, ("moodle.example",), actor="t1", now=LESSON)
    s.add_override("Example.ORG", "students", 1800, actor="t1", now=LESSON)
    assert s.version() > v0
    again = Store(open_db(path)).load()
    assert again.exams[0].scope == "students" and again.exams[0].allow == {"moodle.example"}
    assert again.overrides[0].domain == "example.org" and again.overrides[0].until == LESSON + 1800
    assert s.stop_exam("students") and not s.stop_exam("students")
    assert s.record_policy("h1", []) == 1
    assert s.record_policy("h1", []) == 1
    assert s.record_policy("h2", ["staff"]) == 2
    events = [a["event"] for a in s.audit()]
    assert events[0] == "filtering_off" and "exam_start" in events and "override_add" in events
    with pytest.raises(ValueError, match="past"):
        s.start_exam("students", LESSON - 1, now=LESSON)
