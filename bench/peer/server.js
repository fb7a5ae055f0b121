// The peer for bench/load.py: a ConversationRelay server in the style of
// Twilio's quick-start samples. One Node.js process serves POST /twiml and the
// relay WebSocket on one port, keeps each session's history in memory, and on
// every final prompt streams the model's tokens as `text` frames, closing the
// reply with `last: true`.
//
// The "model" is the same scripted provider Switchboard benchmarks with: the
// reply is "You said: <caller's last words>. That was message <n> from you.",
// streamed word by word (spaces kept) after FIRST_TOKEN_MS, then one word
// every TOKEN_GAP_MS. An interrupt stops the stream in flight.
//
//   PORT=0 FIRST_TOKEN_MS=300 TOKEN_GAP_MS=20 node server.js
// prints one JSON line {"event":"peer_ready","port":N} when listening.

"use strict";

const http = require("http");
const { WebSocketServer } = require("ws");

const FIRST_TOKEN_MS = Number(process.env.FIRST_TOKEN_MS || 0);
const TOKEN_GAP_MS = Number(process.env.TOKEN_GAP_MS || 0);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function scriptedReply(messages) {
  const said = messages.filter((m) => m.role === "user").map((m) => m.content);
  if (said.length === 0) return "Hello! How can I help you today?";
  const last = said[said.length - 1].trim().replace(/[.!?]+$/, "").trim() || "nothing";
  return `You said: ${last}. That was message ${said.length} from you.`;
}

// The same pieces as the Python provider: each word with its spaces.
const pieces = (text) => text.match(/\s*\S+\s*/g) || [];

const server = http.createServer((req, res) => {
  if (req.method === "POST" && req.url.startsWith("/twiml")) {
    req.resume();
    req.on("end", () => {
      const host = req.headers.host;
      res.writeHead(200, { "Content-Type": "text/xml" });
      res.end(
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>' +
          `<ConversationRelay url="ws://${host}/relay" dtmfDetection="true" />` +
          "</Connect></Response>"
      );
    });
    return;
  }
  res.writeHead(404);
  res.end();
});

const wss = new WebSocketServer({ server, path: "/relay" });

wss.on("connection", (ws) => {
  const history = [];
  let generation = 0; // bumped by every prompt and interrupt: stops older streams

  async function answer(gen) {
    const reply = scriptedReply(history);
    if (FIRST_TOKEN_MS > 0) await sleep(FIRST_TOKEN_MS);
    let spoken = "";
    for (const [i, piece] of pieces(reply).entries()) {
      if (i > 0 && TOKEN_GAP_MS > 0) await sleep(TOKEN_GAP_MS);
      if (gen !== generation || ws.readyState !== ws.OPEN) return;
      ws.send(JSON.stringify({ type: "text", token: piece, last: false }));
      spoken += piece;
    }
    ws.send(JSON.stringify({ type: "text", token: "", last: true }));
    history.push({ role: "assistant", content: spoken });
  }

  ws.on("message", (data) => {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    switch (msg.type) {
      case "setup":
        break;
      case "prompt":
        if (!msg.last) break;
        generation += 1;
        history.push({ role: "user", content: msg.voicePrompt });
        answer(generation).catch(() => {});
        break;
      case "interrupt":
        generation += 1;
        break;
      default:
        break; // dtmf, info, error: nothing to say
    }
  });
});

server.listen(Number(process.env.PORT || 0), "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ event: "peer_ready", port: server.address().port }) + "\n");
});

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    wss.close();
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 1000).unref();
  });
}
