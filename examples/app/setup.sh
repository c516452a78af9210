#!/bin/sh
# The app's setup step: render the page the server will serve.
set -e
mkdir -p www
sed "s/@GREETING@/$(cat greeting.txt)/" index.html.in > www/index.html
echo "setup done: $(wc -c < www/index.html) bytes of html"
