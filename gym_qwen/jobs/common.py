"""What every job shares: parsing its config, turning user errors into one line and exit code 2, and the
summaries that more than one job prints."""
from __future__ import annotations

import errno
import sys
from typing import Callable

from gym_qwen.platform.config import ConfigError, describe, parse_config
from gym_qwen.platform.envs import UnknownTaskError, quiet_library_logs
from gym_qwen.platform.files import code_version
from gym_qwen.platform.progress import table
from gym_qwen.platform.speculative.corrector_data import CorrectorDataError
from gym_qwen.platform.speculative.correctors import CorrectorError
from gym_qwen.platform.torch_files import CheckpointError

USER_ERRORS = (ConfigError, CheckpointError, UnknownTaskError, CorrectorDataError, CorrectorError)
# A write that fails for want of space (a full disk, a quota, a file-size limit) is the machine's state, not a bug
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def run_job(command: str, schema, body: Callable, argv: list[str] | None, extra_errors: tuple = ()) -> int:
    """Parse argv into `schema`, call body(cfg). User errors print `gym-qwen CMD: error: ...` and return 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(f"usage: gym-qwen {command} [config=preset.yaml] [key=value ...]\n\n{describe(schema)}")
        return 0
    quiet_library_logs()
    code_version()  # read (and cached) now, so that records written hours later name the code this run imported
    try:
        cfg = parse_config(schema, argv)
        result = body(cfg)
    except USER_ERRORS + extra_errors as e:
        print(f"gym-qwen {command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gym-qwen {command}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno not in NO_SPACE:
            raise
        where = f" {e.filename}" if e.filename else ""
        print(f"gym-qwen {command}: error: cannot write{where}: {e.strerror} (free some space and run it again; "
              "files written before were left as they were)", file=sys.stderr)
        return 2
    return 0 if result is None else int(result)


def _f(x, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def print_dataset_summary(s: dict) -> None:
    """What make-dataset and dataset-info print about a dataset (datasets.summarize's dict)."""
    env = s["env"] or "unknown (neither its metadata nor its name says; pass env= for the normalised score)"
    print(f"{s['source']}: env {env}, observations {s['obs_dim']}, actions {s['action_dim']}")
    print(f"{s['transitions']:,} transitions, {s['episodes']:,} episodes ({s['terminals']:,} ended by a terminal, "
          f"{s['timeouts']:,} by a timeout); {s['dropped_partial']:,} transitions of a final partial episode left out")
    if s["episodes"]:
        rows = [("return", _f(s["return_mean"]), _f(s["return_std"]), _f(s["return_min"]), _f(s["return_max"])),
                ("length", _f(s["length_mean"]), "", str(s["length_min"]), str(s["length_max"]))]
        if "normalized_mean" in s:
            rows.insert(1, ("D4RL normalised score", _f(s["normalized_mean"]), _f(s["normalized_std"]),
                            _f(s["normalized_min"]), _f(s["normalized_max"])))
        print(table(rows, ("per episode", "mean", "std", "min", "max")))
    if "content_sha256" in s:
        print(f"content sha256 {s['content_sha256']} (observations, actions, rewards, flags; metadata left out)")
