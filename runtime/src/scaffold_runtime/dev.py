"""Run the neuron locally: ``python -m scaffold_runtime.dev`` (what ``scaffold neuron run`` does).

When the neuron uses Firestore and neither FIRESTORE_EMULATOR_HOST nor GOOGLE_CLOUD_PROJECT is
set, the Firestore emulator is started beside the server on a free port and stopped with it.
Ctrl-C drains the server, then stops the emulator.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path


def main() -> int:
    import server

    from scaffold_runtime.testing import uses_firestore

    needs_db = uses_firestore()
    local_db = needs_db and not os.environ.get("FIRESTORE_EMULATOR_HOST") and not os.environ.get("GOOGLE_CLOUD_PROJECT")
    with contextlib.ExitStack() as stack:
        if local_db:
            from scaffold_runtime.testing import EMULATOR_PROJECT, firestore_emulator

            try:
                emu = stack.enter_context(firestore_emulator())
            except RuntimeError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            os.environ["FIRESTORE_EMULATOR_HOST"] = emu.host
            os.environ["GOOGLE_CLOUD_PROJECT"] = EMULATOR_PROJECT
            print(f"Firestore emulator: {emu.host} (project {EMULATOR_PROJECT})", file=sys.stderr, flush=True)
        port = os.environ.setdefault("PORT", "8080")
        host = os.environ.get("HOST", "127.0.0.1")
        os.environ["HOST"] = host
        print(f"gRPC server: {host}:{port}  (Ctrl-C stops it)", file=sys.stderr, flush=True)
        gateway = Path(server.__file__).with_name("gateway.py")
        if gateway.is_file():
            http_port = str(int(port) + 1)
            env = {**os.environ, "PORT": http_port, "GRPC_TARGET": f"127.0.0.1:{port}"}
            proc = subprocess.Popen([sys.executable, str(gateway)], env=env)
            stack.callback(_stop, proc)
            print(f"HTTP/JSON gateway: http://{host}:{http_port}  (openapi.json describes it)", file=sys.stderr, flush=True)
        return server.main()


def _stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


if __name__ == "__main__":
    sys.exit(main())
