#!/bin/sh
# The bundled example, end to end: build a busybox base from Debian's busybox-static, build the tutorial-shaped
# web app on it, show its layers, run it without root, fetch its page from localhost:5000, stop it.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${IMAGEBUILD:-"$here/../.venv/bin/imagebuild"}
python=${PYTHON:-"$here/../.venv/bin/python"}
export IMAGEBUILD_ROOT="${IMAGEBUILD_ROOT:-$here/../.demo-store}"
busybox=$(command -v busybox || true)
[ -x /bin/busybox ] && busybox=/bin/busybox
if [ -z "$busybox" ] || ! file -L "$busybox" 2>/dev/null | grep -q "statically linked"; then
    if [ -x /bin/busybox ] && ldd /bin/busybox 2>&1 | grep -q "not a dynamic"; then busybox=/bin/busybox
    else echo "demo: a static busybox is needed: apt-get install busybox-static" >&2; exit 1; fi
fi

step() { printf '\n=== %s\n' "$*"; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$here/busybox/Dockerfile" "$ctx/Dockerfile"
cp "$busybox" "$ctx/busybox"

step "1. the base image: FROM scratch, COPY busybox, RUN busybox --install"
"$bin" build -t busybox:1.35 "$ctx"

step "   lint: does the app's Dockerfile follow the advice?"
"$bin" lint "$here/app"

step "2. the app (examples/app/Dockerfile): FROM busybox, WORKDIR /app, COPY . /app, RUN setup, EXPOSE 5000, CMD"
"$bin" build -t demo-app:latest "$here/app"

step "3. its layers: one per RUN/COPY, the base's shared, not copied"
"$bin" inspect demo-app | "$python" -c 'import json,sys; d=json.load(sys.stdin)[0]; print(json.dumps({k: d[k] for k in ("Id","RepoTags","RootFS")}, indent=2)); print("Cmd:", d["Config"]["Cmd"], "ExposedPorts:", list(d["Config"]["ExposedPorts"]))'
"$bin" history demo-app

step "4. a rebuild with nothing changed reuses every layer and gives the same image"
"$bin" build -t demo-app:latest --explain-cache "$here/app" | grep -E "cache|Successfully built"

step "5. run it (no daemon, no root needed) and fetch http://127.0.0.1:5000/"
"$bin" run --rm --name demo-app demo-app > "$ctx/app.log" 2>&1 &
app=$!
"$python" - <<'PY'
import time, urllib.request
for attempt in range(100):
    try:
        print(urllib.request.urlopen("http://127.0.0.1:5000/", timeout=2).read().decode(), end="")
        break
    except OSError:
        time.sleep(0.1)
else:
    raise SystemExit("demo: the app did not answer on 127.0.0.1:5000")
PY
kill -TERM "$app"
wait "$app" || true
step "done: the app stopped, its container layer removed (--rm); images: "
"$bin" images
