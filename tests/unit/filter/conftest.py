"""Fixtures of the filter's unit tests: the UT1 lists shared next to the checkout."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# ../shared next to the main checkout, or next to the folder of worktrees.
CANDIDATES = [ROOT.parent / "shared", ROOT.parent.parent / "shared"]
UT1 = next((c / "data" / "blocklists" / "ut1" for c in CANDIDATES
            if (c / "data" / "blocklists" / "ut1").is_dir()), CANDIDATES[0] / "data/blocklists/ut1")
