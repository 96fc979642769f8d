"""Start-up and generation timings: median of N runs of each command, printed as a table.

    .venv/bin/python bench/cli.py [--runs 9]

Compares `scaffold --help` with a two-command typer app, `scaffold proto gen` with plain
`python -m grpc_tools.protoc` on the same proto, and `scaffold neuron create` with cookiecutter
(with the user caches warm, as for any create after the first, and with them empty). Timings
only; no assertions.

The generator's modules are byte-compiled first, as `pip install` does for an installed
scaffold (and did for cookiecutter): an editable checkout under PYTHONDONTWRITEBYTECODE=1
would otherwise compile every module from source on every run (~100 ms).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
SCAFFOLD = str(Path(PY).parent / "scaffold")
TYPER_APP = '''
import typer
app = typer.Typer()
@app.command()
def one(name: str = "x"):
    """First."""
@app.command()
def two(name: str = "x"):
    """Second."""
app()
'''


def timed(cmd, cwd, runs, setup=None, env=None) -> float:
    samples = []
    for _ in range(runs):
        if setup:
            setup()
        start = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def timed_pair(a, b, cwd, runs) -> tuple[float, float, list[float]]:
    """Medians (ms) of two (cmd, setup) pairs run alternately (ABBA), and each run's a/b ratio."""
    samples: dict[int, list[float]] = {0: [], 1: []}
    for i in range(runs):
        for side in ((0, 1) if i % 2 == 0 else (1, 0)):
            cmd, setup = (a, b)[side]
            samples[side].append(timed(cmd, cwd, 1, setup))
    return (statistics.median(samples[0]), statistics.median(samples[1]),
            [x / y for x, y in zip(samples[0], samples[1])])


def cookiecutter() -> Path | None:
    """The venv's cookiecutter, installed with pip when missing (None if that fails)."""
    cookie = Path(PY).parent / "cookiecutter"
    if not cookie.exists():
        subprocess.run([PY, "-m", "pip", "install", "-q", "cookiecutter"], capture_output=True)
    return cookie if cookie.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=9)
    runs = parser.parse_args().runs
    subprocess.run([PY, "-m", "compileall", "-q", str(Path(__file__).resolve().parent.parent / "generator")], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="scaffold-bench-"))
    try:
        (tmp / "typer_app.py").write_text(TYPER_APP)
        subprocess.run([SCAFFOLD, "init", "ws", "--org", "xmpl", "--product", "br"], cwd=tmp, check=True, capture_output=True)
        ws = tmp / "ws"
        name = "xmpl.br.resources-books-v1"
        proto = ws / "proto/xmpl/br/resources/books/v1/books.proto"

        def drop_proto():
            proto.unlink(missing_ok=True)

        def drop_neuron():
            shutil.rmtree(ws / "neurons", ignore_errors=True)

        rows = []
        typer_ms = timed([PY, "typer_app.py", "--help"], tmp, runs)
        help_ms = timed([SCAFFOLD, "--help"], tmp, runs)
        rows.append(("typer app with two commands --help", typer_ms, ""))
        rows.append(("scaffold --help", help_ms, f"{help_ms / typer_ms:.2f}x the typer app"))
        rows.append(("scaffold proto create", timed([SCAFFOLD, "proto", "create", name], ws, runs, drop_proto), ""))
        import google.api
        import grpc_tools

        includes = [f"-I{ws / 'proto'}", f"-I{Path(grpc_tools.__file__).parent / '_proto'}",
                    f"-I{Path(google.api.__path__[0]).parent.parent}"]
        out = tmp / "plain"
        out.mkdir()
        plain = timed([PY, "-m", "grpc_tools.protoc", *includes, f"--python_out={out}", f"--pyi_out={out}",
                       f"--grpc_python_out={out}", str(proto)], tmp, runs)
        gen = timed([SCAFFOLD, "proto", "gen", name], ws, runs)
        rows.append(("python -m grpc_tools.protoc (same proto)", plain, ""))
        rows.append(("scaffold proto gen (+ descriptor set)", gen, f"{gen / plain:.2f}x plain protoc"))
        cookie = cookiecutter()
        if cookie is not None:
            tpl = tmp / "cc"
            (tpl / "{{cookiecutter.name}}").mkdir(parents=True)
            (tpl / "cookiecutter.json").write_text('{"name": "demo"}')
            for i in range(8):
                (tpl / "{{cookiecutter.name}}" / f"file{i}.txt").write_text(f"static file {i}\n")
            cc_out = tmp / "cc-out"

            def drop_cc():
                shutil.rmtree(cc_out, ignore_errors=True)

            timed([SCAFFOLD, "neuron", "create", name], ws, 1, drop_neuron)  # warm the user caches once
            create_ms, cc_ms, ratios = timed_pair(([SCAFFOLD, "neuron", "create", name], drop_neuron),
                                                  ([str(cookie), "--no-input", "-o", str(cc_out), str(tpl)], drop_cc), ws, runs)
            rows.append(("cookiecutter, eight static files", cc_ms, "(alternated with the next row)"))
            rows.append(("scaffold neuron create (stubs included)", create_ms,
                         f"{create_ms / cc_ms:.2f}x cookiecutter (per-pair ratios {min(ratios):.2f}-{max(ratios):.2f})"))
            cold = tmp / "cold-cache"

            def drop_neuron_and_caches():
                drop_neuron()
                shutil.rmtree(cold, ignore_errors=True)

            cold_ms = timed([SCAFFOLD, "neuron", "create", name], ws, runs, drop_neuron_and_caches,
                            env={**os.environ, "XDG_CACHE_HOME": str(cold)})
            # The everyday case: the proto was just edited and `proto gen` run, so protoc's
            # results are cached but the rendering and ruff's formatting of what changed are not.
            edits = iter(range(10**6))
            original = proto.read_text()

            def new_proto_after_gen():
                drop_neuron()
                proto.write_text(original + f"\nmessage BenchEdit{next(edits)} {{ string note = 1; }}\n")
                subprocess.run([SCAFFOLD, "proto", "gen", name], cwd=ws, check=True, capture_output=True)

            edited_ms = timed([SCAFFOLD, "neuron", "create", name], ws, runs, new_proto_after_gen)
            proto.write_text(original)
            rows.append(("  the same after a proto edit + proto gen", edited_ms,
                         f"{edited_ms / cc_ms:.2f}x cookiecutter (rendering and ruff run; protoc cached by gen)"))
            rows.append(("  the same with empty user caches", cold_ms,
                         f"{cold_ms / cc_ms:.2f}x cookiecutter (protoc, ruff, rendering all run)"))
        else:
            create_ms = timed([SCAFFOLD, "neuron", "create", name], ws, runs, drop_neuron)
            rows.append(("scaffold neuron create (stubs included)", create_ms, "(pip install cookiecutter failed)"))
        print(f"median of {runs} runs, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
        for label, ms, note in rows:
            print(f"{label:<45} {ms:8.1f} ms  {note}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
