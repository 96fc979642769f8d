#!/usr/bin/env bash
# The main job end to end on a fresh machine: install scaffold, create a workspace in a
# temporary folder, the Books proto, its stubs and neuron, run the neuron (with the Firestore
# emulator), call it, and stop it. Each step says what it is doing.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
step() { printf '\n==> %s\n' "$*"; }

step "[1/5] installing scaffold and its dependencies into $repo/.venv (a minute or two on a fresh machine)"
python3 -m venv "$repo/.venv"
# One line per package as pip gets to it, instead of minutes of silence.
"$repo/.venv/bin/python" -m pip install --disable-pip-version-check -c "$repo/constraints.txt" -e "$repo[dev]" 2>&1 \
  | grep --line-buffered -E '^(Collecting|Installing|Successfully|ERROR)' | sed -u 's/^/    /'
export PATH="$repo/.venv/bin:$PATH"

step "[2/5] a workspace, the Books proto, its stubs and its neuron"
work="$(mktemp -d)"
cd "$work"
set -x
scaffold init books-demo --org xmpl --product br
cd books-demo
scaffold proto create xmpl.br.resources-books-v1
scaffold proto gen xmpl.br.resources-books-v1
scaffold neuron create xmpl.br.resources-books-v1
set +x

port="${PORT:-50051}"
step "[3/5] starting the neuron on 127.0.0.1:$port with the Firestore emulator (log: $work/server.log)"
scaffold neuron run xmpl.br.resources-books-v1 --port "$port" > "$work/server.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  grpcurl -plaintext "127.0.0.1:$port" list >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log"; exit 1; }
  sleep 0.2
done

step "[4/5] calling it"
set -x
grpcurl -plaintext -d '{"book": {"display_name": "The Odyssey"}, "book_id": "odyssey"}' \
  "127.0.0.1:$port" xmpl.br.resources.books.v1.BooksService/CreateBook
grpcurl -plaintext -d '{"page_size": 10}' "127.0.0.1:$port" xmpl.br.resources.books.v1.BooksService/ListBooks
set +x
step "[5/5] stopping it; workspace left in $work/books-demo; server log: $work/server.log"
