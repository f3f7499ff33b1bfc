// What the report's scripts share (they run as one script, this file first).
// Text is only ever written with textContent, never parsed as HTML: a token stays text, whatever it holds.
"use strict";
function mgElement(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function mgToken(D, id) {
  const t = D.text[String(id)];
  return t === undefined ? "<" + id + ">" : t;
}
