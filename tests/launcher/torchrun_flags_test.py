"""torchrun's flags against ddprun's (Note [torchrun's flags] in launcher/launch_flags.h).

The reference is the pinned wheel's own parser, torch.distributed.run.get_args_parser():
- every option string torchrun accepts is a spelling of a ddprun flag whose row says what
  ddprun does with it (supported, ignored or refused), so a flag a new torch adds fails here
  until it has a row;
- where torchrun falls back to PET_<DEST> (its argparse_util env/check_env actions), the row
  names that variable, and no other where torchrun has none;
- no row claims to be a torchrun flag that torchrun does not have;
- README's table ("torchrun's flags") lists every torchrun flag once, with the row's status.
ddprun's rows come from `ddprun --flags-json`.

Usage: torchrun_flags_test.py REPO_DIR DDPRUN
"""
import json
import re
import subprocess
import sys
import unittest

from torch.distributed import argparse_util
from torch.distributed.run import get_args_parser

REPO, DDPRUN = sys.argv[1], sys.argv[2]

# Flags being added, listed as "pending" in README's table (none now).
PENDING: set = set()


def torchrun_flags() -> dict:
    """Primary name ('--nproc-per-node') -> (every option string, PET variable or None)."""
    flags = {}
    for action in get_args_parser()._actions:
        if not action.option_strings:
            continue  # training_script and its arguments
        variable = None
        if isinstance(action, (argparse_util.env, argparse_util.check_env)):
            variable = f"PET_{action.dest.upper()}"
        dashed = [s for s in action.option_strings if s.startswith("--") and "_" not in s]
        primary = dashed[0] if dashed else max(action.option_strings, key=len)
        flags[primary] = (set(action.option_strings), variable)
    return flags


def ddprun_rows() -> list:
    out = subprocess.run([DDPRUN, "--flags-json"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise AssertionError(f"ddprun --flags-json exited {out.returncode}: {out.stderr}")
    return json.loads(out.stdout)


def readme_table() -> dict:
    """'--flag' -> status, from the rows of README's torchrun table."""
    with open(f"{REPO}/README.md", encoding="utf-8") as f:
        text = f.read()
    start = text.index("### torchrun's flags")
    rows = {}
    for line in text[start:].splitlines()[1:]:
        if line.startswith("#"):
            break
        match = re.match(r"^\| `(-[^`]+)`[^|]*\|[^|]*\| (\w+) \|", line)
        if match:
            if match.group(1) in rows:
                raise AssertionError(f"README lists {match.group(1)} twice")
            rows[match.group(1)] = match.group(2)
    return rows


class TorchrunFlagsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.torchrun = torchrun_flags()
        cls.rows = ddprun_rows()
        cls.by_spelling = {s: row for row in cls.rows for s in row["spellings"]}

    def test_every_torchrun_flag_has_a_row_with_its_spellings_and_variable(self):
        for primary, (spellings, variable) in self.torchrun.items():
            with self.subTest(flag=primary):
                if primary in PENDING:
                    self.assertNotIn(primary, self.by_spelling, "pending but has a row: drop it "
                                     "from PENDING")
                    continue
                self.assertTrue(primary in self.by_spelling,
                                f"torchrun has {primary}: add a row to launcher/launch_flags.cpp")
                row = self.by_spelling[primary]
                self.assertIn(row["torchrun"], ("supported", "ignored", "refused"))
                self.assertLessEqual(spellings, set(row["spellings"]))
                self.assertEqual(row["variable"] or None, variable)
                if row["torchrun"] != "supported":
                    self.assertTrue(row["torchrunNote"], "an ignored or refused flag says why")

    def test_no_row_claims_a_flag_torchrun_does_not_have(self):
        known = set().union(*(s for s, _ in self.torchrun.values()))
        for row in self.rows:
            if row["torchrun"] != "not-torchrun":
                self.assertIn(f"--{row['name']}", known, row)
            else:
                self.assertFalse(set(row["spellings"]) & known,
                                 f"{row['name']} is torchrun's too: give it a status")

    def test_readme_lists_every_torchrun_flag_with_its_status(self):
        readme = readme_table()
        self.assertEqual(set(readme), set(self.torchrun),
                         "README's table and torchrun's flags differ")
        counts = {}
        for primary, status in readme.items():
            with self.subTest(flag=primary):
                row = self.by_spelling.get(primary, {"torchrun": "(no row in ddprun)"})
                expected = "pending" if primary in PENDING else row["torchrun"]
                self.assertEqual(status, expected)
                counts[status] = counts.get(status, 0) + 1
        print(f"torchrun's {len(readme)} flags in ddprun: " +
              ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
