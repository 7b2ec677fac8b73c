"""The batch writer process's lifecycle, without a broker."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.support.services import REPO, service_env, wait_for

# An intake that starts its writer process and exits without stopping it.
FORGETFUL_INTAKE = """
    import time
    from collector.config import CollectorSettings
    from collector.writer_process import WriterProcess

    if __name__ == "__main__":
        writer = WriterProcess(CollectorSettings(database_url="postgresql://x@127.0.0.1:1/x"))
        writer.start()
        print(writer._process.pid, flush=True)
        time.sleep(2)  # long enough for the writer to be up and ignoring SIGTERM
"""


def test_an_intake_exiting_without_stop_still_ends_its_writer_and_itself(tmp_path):
    script = tmp_path / "intake.py"
    script.write_text(textwrap.dedent(FORGETFUL_INTAKE))
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=REPO,
        env=service_env(),
        capture_output=True,
        text=True,
        timeout=30,  # what it hung in: multiprocessing's exit handler joining the writer
    )
    assert proc.returncode == 0, proc.stderr
    writer = int(proc.stdout.split()[0])
    wait_for(lambda: not os.path.exists(f"/proc/{writer}"), 10, "the writer process to end")
