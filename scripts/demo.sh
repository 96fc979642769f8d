#!/usr/bin/env bash
# The main job end to end on a fresh machine: install scaffold, create a workspace in a
# temporary folder, the Books proto, its stubs and neuron, run the neuron (with the Firestore
# emulator), call it, and stop it.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

python3 -m venv "$repo/.venv"
"$repo/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -c "$repo/constraints.txt" -e "$repo[dev]"
export PATH="$repo/.venv/bin:$PATH"

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
scaffold neuron run xmpl.br.resources-books-v1 --port "$port" > "$work/server.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  grpcurl -plaintext "127.0.0.1:$port" list >/dev/null 2>&1 && break
  sleep 0.2
done
set -x
grpcurl -plaintext -d '{"book": {"display_name": "The Odyssey"}, "book_id": "odyssey"}' \
  "127.0.0.1:$port" xmpl.br.resources.books.v1.BooksService/CreateBook
grpcurl -plaintext -d '{"page_size": 10}' "127.0.0.1:$port" xmpl.br.resources.books.v1.BooksService/ListBooks
set +x
echo "workspace left in $work/books-demo; server log: $work/server.log"
