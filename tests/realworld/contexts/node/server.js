const http = require("http");
const kleur = require("kleur");
const ms = require("ms");

const started = Date.now();
http
  .createServer((req, res) => res.end(`up for ${ms(Date.now() - started)}\n`))
  .listen(3000, () => console.log(kleur.green("listening on 3000")));
