"""What every job shares: parsing its config, turning user errors into one line and exit code 2."""
from __future__ import annotations

import errno
import sys
from typing import Callable

from gym_qwen.platform.config import ConfigError, describe, parse_config
from gym_qwen.platform.envs import UnknownTaskError, quiet_library_logs
from gym_qwen.platform.progress import table  # noqa: F401  (every job prints its tables with it)
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
