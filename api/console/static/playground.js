// The playground: a user's feed as cards, a phone's gestures on each (real events through
// POST /v1/events), and beside it the user's live signals and the page's explain trace.

import { $, call, el, fill, fixed, guarded, notice, uuid4, when } from "./api.js";

const SIGNALS_EVERY_MS = 2000;
let session = { user: "", id: "", seq: 0 };
let page = null; // the last feed: { feed, cards: Map(item_id -> catalog entry) }

function user() {
  return $("#user-id").value.trim();
}

function sessionOf(userId) {
  if (session.user !== userId) session = { user: userId, id: `console-${uuid4().slice(0, 8)}`, seq: 0 };
  return session;
}

async function nextPage() {
  const userId = user();
  if (!userId) return;
  const feed = await call("GET", "/v1/feed", {
    query: { user_id: userId, n: $("#page-size").value, explain: "true" },
  });
  const ids = feed.items.map((item) => item.item_id);
  const entries = ids.length ? await call("GET", "/console/api/items", { query: { ids: ids.join(",") } }) : [];
  page = { feed, cards: new Map(entries.map((entry) => [entry.item_id, entry])) };
  history.replaceState(null, "", `?user_id=${encodeURIComponent(userId)}`);
  renderPage();
  await refreshSignals();
}

function renderPage() {
  const { feed, cards } = page;
  const explained = new Map((feed.explain?.items || []).map((item) => [item.item_id, item]));
  $("#page-meta").replaceChildren(
    el("span", { id: "model-version", dataset: { version: feed.model_version } }, `model ${feed.model_version}`),
    ` · ${feed.candidates} candidates · request ${feed.request_id.slice(0, 8)}`,
  );
  const list = $("#cards");
  list.replaceChildren();
  for (const item of feed.items) list.append(card(item, cards.get(item.item_id), explained.get(item.item_id)));
  renderTagShare(feed.items.map((item) => cards.get(item.item_id)?.tags || []));
  renderExplain(feed.explain);
  $("#page-meta").dataset.request = feed.request_id; // (last: the page is drawn when it changes)
}

function card(item, entry, explained) {
  const node = $("#card-template").content.firstElementChild.cloneNode(true);
  node.dataset.item = item.item_id;
  node.dataset.creator = item.creator_id;
  node.dataset.tags = (entry?.tags || []).join(" ");
  $(".item-id", node).textContent = item.item_id;
  $(".source", node).textContent = item.source;
  $(".creator", node).textContent = `by ${item.creator_id}`;
  $(".tags", node).replaceChildren(...(entry?.tags || []).map((tag) => el("span", { class: "tag" }, tag)));
  $(".length", node).textContent = entry ? `${(entry.duration_ms / 1000).toFixed(1)} s` : "—";
  $(".score", node).textContent = fixed(item.score);
  $(".prerank", node).textContent = fixed(explained?.prerank);
  $(".propensity", node).textContent = fixed(item.propensity, 2);
  const top = Object.entries(explained?.contributions || {})
    .sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]))
    .slice(0, 3);
  $(".contributions", node).replaceChildren(
    ...top.map(([name, value]) => el("span", { class: value >= 0 ? "up" : "down" }, `${name} ${value >= 0 ? "+" : ""}${value.toFixed(3)}`)),
  );
  for (const button of node.querySelectorAll(".actions button")) {
    button.addEventListener("click", () => guarded(() => act(node, item, entry, button)));
  }
  return node;
}

async function act(node, item, entry, button) {
  const userId = user();
  const current = sessionOf(userId);
  const duration = entry?.duration_ms || 15000;
  const event = {
    event_id: uuid4(),
    user_id: userId,
    item_id: item.item_id,
    kind: button.dataset.kind,
    client_ts: new Date().toISOString(),
    session_id: current.id,
    seq: current.seq++,
    watch_ms: Math.round(Number(button.dataset.watched) * duration),
    request_id: page.feed.request_id,
  };
  const accepted = await call("POST", "/v1/events", { body: { events: [event] } });
  button.classList.add("sent");
  $(".done", node).append(el("span", { class: "badge", dataset: { kind: event.kind } }, `${button.textContent} ✓`));
  if (event.kind === "block" || event.kind === "not_interested") node.classList.add("gone");
  notice(`${button.textContent}: ${item.item_id} (accepted ${accepted.accepted})`);
  await refreshSignals();
}

function renderTagShare(tagLists) {
  const counts = new Map();
  for (const tags of tagLists) for (const tag of new Set(tags)) counts.set(tag, (counts.get(tag) || 0) + 1);
  const total = tagLists.length;
  const box = $("#tag-share");
  box.dataset.total = total;
  box.replaceChildren(
    el("span", { class: "muted" }, "tags on this page: "),
    ...[...counts.entries()]
      .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
      .map(([tag, count]) => el("span", { class: "tag", dataset: { tag, count } }, `${tag} ${count}/${total}`)),
  );
}

function renderExplain(explain) {
  if (!explain) return;
  const pairs = (object) => Object.entries(object || {}).sort((a, b) => b[1] - a[1]);
  const small = (title, rows, id) =>
    el("table", { id }, el("caption", {}, title), el("tbody", {}, rows.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, String(v))))));
  $("#explain").replaceChildren(
    small("candidates per source", pairs(explain.candidates_per_source), "per-source"),
    small("dropped, by reason", pairs(explain.dropped), "dropped"),
    small("stage ms", Object.entries(explain.stage_ms).map(([k, v]) => [k, v.toFixed(2)]), "stages"),
    el("p", {}, `shortlist ranked by the model: ${explain.shortlist}`),
  );
}

async function refreshSignals() {
  const userId = user();
  if (!userId) return;
  const signals = await call("GET", `/console/api/users/${encodeURIComponent(userId)}/signals`);
  const scores = (rows, kind) =>
    el("table", { class: "scores" }, el("tbody", {}, rows.map((row) =>
      el("tr", { dataset: { [kind]: row.name, score: row.score } },
        el("td", {}, row.name),
        el("td", {}, el("span", { class: row.score >= 0 ? "bar up" : "bar down", style: `width:${Math.min(Math.abs(row.score) * 12, 100)}px` })),
        el("td", {}, row.score.toFixed(2))))));
  const s = signals.session;
  $("#signals").replaceChildren(
    el("h3", {}, "tag affinity"), signals.tags.length ? scores(signals.tags, "tag") : el("p", { class: "muted" }, "none yet"),
    el("h3", {}, "creator affinity"), signals.creators.length ? scores(signals.creators, "creator") : el("p", { class: "muted" }, "none yet"),
    el("h3", {}, "session"),
    el("p", { id: "session" }, s ? `${s.session_id}: ${s.events} events, ${s.plays} plays, ${s.length_s} s, skip streak ${s.skip_streak}` : "none"),
    el("p", {}, "follows: ", ...signals.followed.map((c) => el("span", { class: "tag", dataset: { followed: c } }, c))),
    el("p", { id: "blocked" }, "blocked: ", ...signals.blocked.map((c) => el("span", { class: "tag", dataset: { blocked: c } }, c))),
    el("p", {}, `seen ${signals.seen} · hidden ${signals.hidden_items} · vector ${signals.learned_vector ? "learned" : "from recent likes"}${signals.network ? ` · ${signals.network}` : ""}`),
    el("h3", {}, "recent swipes (stored)"),
    el("table", { id: "recent" }, el("tbody", {}, signals.recent.map((swipe) =>
      el("tr", {}, el("td", {}, swipe.kind), el("td", {}, swipe.item_id), el("td", {}, `${(swipe.watch_ms / 1000).toFixed(1)} s`), el("td", {}, when(swipe.client_ts)))))),
  );
}

async function knownUsers() {
  const users = await call("GET", "/console/api/users", { query: { prefix: user(), limit: 50 } });
  $("#known-users").replaceChildren(...users.map((id) => el("option", { value: id })));
}

$("#pick-user").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(nextPage);
});
$("#new-user").addEventListener("click", () => {
  $("#user-id").value = `console-${uuid4().slice(0, 6)}`;
  guarded(nextPage);
});
$("#refresh-signals").addEventListener("click", () => guarded(refreshSignals));
$("#user-id").addEventListener("focus", () => guarded(knownUsers));
// the signals follow the stream: refreshed while a user is on the page (not the feed: a page
// is asked for, since each one marks what it shows as seen)
setInterval(() => {
  if (page && document.visibilityState === "visible") refreshSignals().catch(() => {});
}, SIGNALS_EVERY_MS);
if (user()) guarded(nextPage);
