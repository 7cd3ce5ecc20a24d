// lanboard's web client: the board at `/` and the read-only wall at `/wall`
// (or `?wall`). It speaks protocol v1 over `/ws` (frames are described in
// src/protocol.rs), reads `/api/info` and `/api/messages` over HTTP, and logs
// in through `/api/login` when the board has a passphrase. Posts wait in an
// outbox (kept in localStorage) until the board confirms them, and are sent
// again with the same cid when their fate is unknown. The passphrase is never
// kept: the HttpOnly cookie `/api/login` sets is what opens the board, and a
// 401 brings the passphrase form back. User text only ever reaches the page
// through text nodes.
//
// Every post carries this browser's author key, so the posts it wrote can be
// edited and deleted from it later; an operator link (`#operator=<secret>`)
// turns on operator mode, in which any post can be deleted and its sender
// blocked. Edits and deletions reach every open page through the feed, and a
// page that was away gets the ones it missed when it resumes.
//
// The search field in the top bar asks `/api/search` as you type; opening a
// result shows that message among its neighbours (`/api/messages?around=`)
// in place of the live board, until "Back to latest".
//
// Files come along with a post: pasted, dropped on the page or picked with
// the attach button, each is uploaded at once to `POST /api/files` (with
// XMLHttpRequest, whose upload reports progress; fetch's does not), and the
// post names the ids the board gave them. The post waits for uploads still
// running. Images the board serves inline show as previews that open full
// size in a dialog, audio and video as players; every file has a chip that
// downloads it.
'use strict';

// ---- Settings (units in the names) -----------------------------------------

/** First reconnect delay; doubles per failed attempt up to the cap. */
const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 10_000;
/** A connection without its welcome after this long is given up and retried. */
const CONNECT_TIMEOUT_MS = 10_000;
/** How often the page checks whether the computer was asleep. */
const WAKE_CHECK_MS = 5_000;
/**
 * A check this late means the computer slept, and the socket may be dead
 * without knowing it. Longer than the one-minute timer throttling browsers
 * apply to hidden tabs, so a background tab is not mistaken for a sleeper.
 */
const SLEPT_AFTER_MS = 90_000;
/** Messages asked for per "Show older messages" click. */
const OLDER_PAGE = 200;
/** Pause after the last keystroke in the search field before the board is asked. */
const SEARCH_DEBOUNCE_MS = 150;
/** Results asked for per search request (and per "More results"). */
const SEARCH_PAGE = 20;
/** Messages shown on each side of a found message. */
const CONTEXT_SIDE = 25;
/** Characters of a long message a result shows, starting a little before its first match. */
const SNIPPET_CHARS = 180;
const SNIPPET_LEAD_CHARS = 40;
/** Messages per request when downloading the history (the API's maximum). */
const DOWNLOAD_PAGE = 500;
/** Messages the wall keeps on screen; older ones leave the page. */
const WALL_KEEP = 40;
/** The character counter appears from this share of the limit on. */
const COUNTER_FROM = 0.9;
/** Longest text read out by screen readers for one new message. */
const ANNOUNCE_MAX_CHARS = 200;
/** How long the "Copied" label stays on a copy button. */
const COPIED_MS = 1600;
/** How long a new message stays highlighted on the wall. */
const ARRIVAL_MS = 4000;
/** Own posts remembered across reloads (for their Edit and Delete); older ones drop off. */
const OWN_POSTS_KEPT = 500;
/** The blocks offered in operator mode (the board takes 1 to 10,080 minutes). */
const BLOCK_CHOICES = [
  { minutes: 60, label: 'Block sender for 1 hour', span: '1 hour' },
  { minutes: 1440, label: 'Block sender for 1 day', span: '1 day' },
];
/**
 * While the board's storage is unreachable, a post is offered again about
 * this often (jittered, so that every waiting page does not knock at once).
 */
const PAUSED_RETRY_MS = 3_000;
/**
 * Unconfirmed posts older than this are not sent after a reload. The board
 * recognises a repeated post for a day, so a resend inside this window can
 * never be stored twice; past it the post is likely stale anyway.
 */
const OUTBOX_MAX_AGE_MS = 12 * 60 * 60 * 1000;
/**
 * The raster image types the board serves inline (`/files/<id>`): shown as
 * previews. Audio and video get players; every other file, SVG included
 * (which the board sends as a download, since it may carry script), is a
 * chip that downloads it.
 */
const PREVIEW_TYPES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp', 'image/avif']);

const WALL = location.pathname === '/wall' || new URLSearchParams(location.search).has('wall');

// ---- Elements, grabbed once -------------------------------------------------

const byId = (id) => document.getElementById(id);
const ui = {
  form: byId('create-message'),
  name: byId('name'),
  message: byId('message'),
  send: byId('send'),
  counter: byId('counter'),
  formError: byId('form-error'),
  paused: byId('sending-paused'),
  pausedWhy: byId('sending-paused-why'),
  resetNote: byId('board-reset'),
  list: byId('messages'),
  empty: byId('empty'),
  older: byId('show-older'),
  status: byId('status'),
  online: byId('online'),
  announcer: byId('announcer'),
  panelToggle: byId('panel-toggle'),
  sidebar: byId('sidebar'),
  inviteUrls: byId('invite-urls'),
  inviteLocal: byId('invite-local'),
  qr: byId('qr'),
  qrNote: byId('qr-note'),
  login: byId('login'),
  loginForm: byId('login-form'),
  password: byId('password'),
  loginError: byId('login-error'),
  sound: byId('sound'),
  notify: byId('notify'),
  notifyHint: byId('notify-hint'),
  download: byId('download'),
  favicon: byId('favicon'),
  operatorBadge: byId('operator-badge'),
  operatorLeave: byId('operator-leave'),
  searchToggle: byId('search-toggle'),
  searchBox: byId('search-box'),
  searchForm: byId('search-form'),
  search: byId('search'),
  searchPanel: byId('search-panel'),
  searchStatus: byId('search-status'),
  searchResults: byId('search-results'),
  contextNote: byId('context-note'),
  contextBar: byId('context-bar'),
  backToLatest: byId('back-to-latest'),
  contextNew: byId('context-new'),
  newer: byId('show-newer'),
  attachments: byId('attachments'),
  sendingFiles: byId('sending-files'),
  fileInput: byId('file-input'),
  attach: byId('attach'),
  dropZone: byId('drop-zone'),
  viewer: byId('viewer'),
  viewerImage: byId('viewer-image'),
  viewerName: byId('viewer-name'),
  viewerDownload: byId('viewer-download'),
  viewerClose: byId('viewer-close'),
};

// ---- State ------------------------------------------------------------------

const state = {
  socket: null,
  connected: false,
  /** The current socket has received its `messages-available`. */
  welcomed: false,
  /** Waiting for the passphrase: no reconnecting until it is given. */
  locked: false,
  /** Failed connection attempts since the last successful one. */
  attempt: 0,
  retryTimer: 0,
  /** Whether a `messages-available` has ever arrived (the first is not news). */
  loaded: false,
  /**
   * Highest id that came through the board's ordered feed: where a reconnect
   * resumes (`?since=`), and the line below which a feed message is one
   * already drawn (see `addMessages`).
   */
  lastId: 0,
  /**
   * Ids above `lastId` drawn from the `ack` of this page's own post, ahead of
   * their `message-added`. Every other repeat is known by its place in the
   * feed, so this holds only the posts confirmed ahead of the feed (one or
   * two at a time) and is emptied as `lastId` passes them: a page open for
   * weeks keeps no record of every id it has shown.
   */
  ahead: new Set(),
  /**
   * The history `lastId` belongs to, as the last `messages-available` named
   * it (Redis boards only). Sent along on a resume, so that a board that lost
   * that history answers with `board-reset` rather than a resume from an id
   * of another history.
   */
  epoch: null,
  /** Lowest id in the list: where "Show older messages" continues. */
  oldestId: 0,
  /** The server said there is nothing before `oldestId`. */
  noOlder: false,
  nextAck: 1,
  /** Requests awaiting their reply, by ack number. */
  pending: new Map(),
  /** The cid of the outbox post on its way to the board, if any: one at a time keeps their order. */
  posting: null,
  /** The board said its storage is unreachable; the outbox waits and retries. */
  paused: false,
  pausedTimer: 0,
  /**
   * Others' messages that arrived while the page was hidden, by id: the
   * title counts them, and a deletion takes its message back out.
   */
  unread: [],
  /**
   * New messages whose news (unread count, sound, notification, screen
   * reader) waits while this page has posts the board has not confirmed:
   * any of them may be one of those posts, and only the ack of a post's cid
   * tells which message is this page's own. Told once the outbox is empty.
   */
  held: [],
  /** Ids the board gave this page's posts (from their acks) while news was held. */
  ownIds: new Set(),
  /** The board's limits, as `/api/info` gives them; these are its defaults. */
  limits: { max_message_chars: 4000, max_name_chars: 64, max_file_bytes: 25 * 1024 * 1024, max_files_per_message: 10 },
  /**
   * The files attached to the post being written, in the order they were
   * attached (see `attach`): uploading, uploaded (`file` is the board's
   * File) or failed (`problem` says why).
   */
  attachments: [],
  /** Send was pressed while uploads ran: the post goes once they are done. */
  sendWhenUploaded: false,
  /** Files dragged over the page: dragenter minus dragleave, so the drop zone shows until the drag leaves the page. */
  dragDepth: 0,
  sound: false,
  notify: false,
  /** The operator secret of an operator link, while in operator mode; '' otherwise. */
  operatorKey: '',
  /**
   * While the list shows a found message among its neighbours rather than
   * the live board (see "Search"), what the live board did meanwhile:
   * `since`, `lastId` when the list was left; `fresh`, the ids of the
   * messages posted since (the count on "Back to latest"); `newer`, whether
   * newer messages than those shown can be loaded; `returning`, while the
   * latest messages are on their way, the feed's events meanwhile, to apply
   * over them. Null on the live board.
   */
  context: null,
  /** Counts the list's replacements, so that an answer for a list no longer shown is dropped. */
  view: 0,
};

const BASE_TITLE = WALL ? 'lanboard wall' : 'lanboard';
const STORAGE = {
  name: 'lanboard.name',
  sound: 'lanboard.sound',
  notify: 'lanboard.notify',
  // Posts not yet confirmed by the board, so a reload or a closed tab does
  // not lose them: a JSON array of {cid, name, text, files?, createdMs},
  // oldest first, `files` the board's Files of the uploads the post names.
  outbox: 'lanboard.outbox',
  // This browser's author key (see `authorKey`).
  key: 'lanboard.key',
  // The posts this browser wrote (see `ownPosts`).
  own: 'lanboard.own',
  // The secret of the operator link this browser was opened with (see `takeOperatorLink`).
  operator: 'lanboard.operator',
};

/** localStorage that never throws: private windows and full disks only lose the setting. */
const storage = {
  get(key) {
    try {
      return window.localStorage.getItem(key);
    } catch {
      return null;
    }
  },
  set(key, value) {
    try {
      window.localStorage.setItem(key, value);
    } catch {
      // Not remembered this time; everything else works.
    }
  },
  remove(key) {
    try {
      window.localStorage.removeItem(key);
    } catch {
      // Nothing to remove where there is no storage.
    }
  },
};

/**
 * Keys earlier versions of the page kept and this one must not: the board's
 * passphrase was once stored in the clear, readable by any script on the page.
 */
const RETIRED_KEYS = ['lanboard.passphrase'];

// ---- Outbox -----------------------------------------------------------------

/**
 * Posts this page has sent (or will send) that the board has not confirmed,
 * oldest first. Each carries a cid, the post's own id chosen here: the board
 * answers a repeated cid with the message it stored the first time, so a
 * post can be sent again whenever its fate is unknown without appearing twice.
 *
 * The list is mirrored in localStorage. Other tabs of the board share that
 * copy, so changes are applied to what is stored now (read, change, write)
 * rather than overwriting it with this page's list; a page adopts the stored
 * posts only when it opens, and a post sent by two pages is still stored once.
 */
const outbox = {
  /** @type {{cid: string, name: string, text: string, files?: object[], createdMs: number}[]} */
  posts: [],

  /** Takes over the posts a reloaded or closed page left unconfirmed. */
  load() {
    const fresh = outbox.stored().filter((post) => Date.now() - post.createdMs < OUTBOX_MAX_AGE_MS);
    outbox.posts = fresh;
    storage.set(STORAGE.outbox, JSON.stringify(fresh));
  },

  add(post) {
    outbox.posts.push(post);
    storage.set(STORAGE.outbox, JSON.stringify([...outbox.stored(), post]));
  },

  /** Forgets a post: the board confirmed it, or refused it for good. Returns it, if it was here. */
  remove(cid) {
    const post = outbox.find(cid);
    outbox.posts = outbox.posts.filter((p) => p.cid !== cid);
    const others = outbox.stored().filter((p) => p.cid !== cid);
    storage.set(STORAGE.outbox, JSON.stringify(others));
    return post;
  },

  find(cid) {
    return outbox.posts.find((p) => p.cid === cid) || null;
  },

  /** The stored list, without anything malformed (a damaged or hand-edited entry is dropped). */
  stored() {
    let list;
    try {
      list = JSON.parse(storage.get(STORAGE.outbox) || '[]');
    } catch {
      return [];
    }
    if (!Array.isArray(list)) return [];
    return list.filter(
      (post) =>
        post !== null &&
        typeof post === 'object' &&
        typeof post.cid === 'string' &&
        post.cid.length >= 1 &&
        post.cid.length <= 64 &&
        typeof post.name === 'string' &&
        typeof post.text === 'string' &&
        (post.files === undefined || (Array.isArray(post.files) && post.files.every(isFile))) &&
        Number.isFinite(post.createdMs),
    );
  },
};

/**
 * 32 lowercase hex digits (128 random bits): a post's cid, or this
 * browser's author key. Not `crypto.randomUUID`, which browsers only offer
 * in secure contexts (https or localhost), and boards are mostly opened over
 * plain http on the LAN.
 */
function randomHex() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');
}

/** True for what the board takes as a key: 16 to 128 printable ASCII characters. */
const isKey = (text) => typeof text === 'string' && /^[\x20-\x7e]{16,128}$/.test(text);

// ---- Own posts and operator mode --------------------------------------------

/** This page's author key where the browser's storage keeps nothing (a private window). */
let pageKey = '';

/**
 * This browser's author key, sent with every post: the key a post was sent
 * with is the one that may edit or delete it later (the board keeps only its
 * hash). One per browser, made on first use and kept in localStorage; read
 * from there each time, so that every tab of the browser sends the one key
 * whichever tab made it.
 */
function authorKey() {
  const stored = storage.get(STORAGE.key);
  if (isKey(stored)) return stored;
  pageKey = pageKey || randomHex();
  storage.set(STORAGE.key, pageKey);
  return pageKey;
}

/**
 * The posts this browser wrote, known by the ids their acks gave them: they
 * get Edit and Delete. Mirrored in localStorage, the newest OWN_POSTS_KEPT,
 * so that a reload keeps them editable; tabs merge into the stored list
 * rather than overwrite it. Each id is kept with its post's time, because a
 * board that lost its history gives its ids out again from 1: a post with a
 * remembered id but another time is someone else's.
 */
const ownPosts = {
  /** @type {[number, number][]} [id, time] pairs, by id. */
  pairs: [],

  load() {
    ownPosts.pairs = ownPosts.stored();
  },

  add(message) {
    // The new pair first, so that it wins over a remembered one with the same id.
    ownPosts.save(ownPosts.merged([[message.id, message.time]]).slice(-OWN_POSTS_KEPT));
  },

  /** Forgets a post the board says this browser's key may not change. */
  forget(id) {
    ownPosts.save(ownPosts.merged([]).filter(([other]) => other !== id));
  },

  /**
   * `first`, the stored pairs and this page's (which are all there is where
   * storage keeps nothing), by id, with the first pair of each id.
   */
  merged(first) {
    const all = [...first, ...ownPosts.stored(), ...ownPosts.pairs];
    // Sorting is stable, so the first pair of an id stays first among its equals.
    all.sort((a, b) => a[0] - b[0]);
    return all.filter((pair, i) => i === 0 || pair[0] !== all[i - 1][0]);
  },

  save(pairs) {
    ownPosts.pairs = pairs;
    storage.set(STORAGE.own, JSON.stringify(pairs));
  },

  has(id, time) {
    return ownPosts.pairs.some((pair) => pair[0] === id && pair[1] === time);
  },

  /** The stored list, without anything malformed. */
  stored() {
    let list;
    try {
      list = JSON.parse(storage.get(STORAGE.own) || '[]');
    } catch {
      return ownPosts.pairs;
    }
    if (!Array.isArray(list)) return ownPosts.pairs;
    return list.filter(
      (pair) =>
        Array.isArray(pair) && pair.length === 2 && Number.isSafeInteger(pair[0]) && Number.isFinite(pair[1]),
    );
  },
};

/**
 * Takes the secret of an operator link (`#operator=<secret>`, printed by
 * `lanboard operator-link`): kept in this browser's storage only, and out of
 * the address bar at once, so it is not in the history, a bookmark or a
 * shared screen. Then turns operator mode on.
 */
function takeOperatorLink() {
  const secret = new URLSearchParams(location.hash.slice(1)).get('operator');
  if (secret === null) return;
  history.replaceState(history.state, '', `${location.pathname}${location.search}`);
  if (!isKey(secret)) {
    console.warn('lanboard: the operator link is damaged; operator mode stays off');
    return;
  }
  storage.set(STORAGE.operator, secret);
  setOperator(secret);
  announce('Operator mode is on: any post can be deleted and its sender blocked.');
}

/** Turns operator mode on with `secret`, or off with anything that is not a key. */
function setOperator(secret) {
  state.operatorKey = isKey(secret) ? secret : '';
  ui.operatorBadge.hidden = WALL || state.operatorKey === '';
  showAllActions();
}

/** Leaves operator mode: this browser forgets the secret. */
function leaveOperatorMode() {
  storage.remove(STORAGE.operator);
  setOperator('');
}

function setUpOwnPosts() {
  ownPosts.load();
  setOperator(storage.get(STORAGE.operator));
  takeOperatorLink();
  // The link opened in a tab that shows the board already only changes the fragment.
  window.addEventListener('hashchange', takeOperatorLink);
  ui.operatorLeave.addEventListener('click', () => {
    leaveOperatorMode();
    announce('Operator mode is off; this browser forgot the operator link.');
    if (!WALL) ui.message.focus();
  });
  // Another tab of this browser posted, or entered or left operator mode.
  window.addEventListener('storage', (event) => {
    if (event.key === STORAGE.own || event.key === null) {
      ownPosts.load();
      showAllActions();
    }
    if (event.key === STORAGE.operator || event.key === null) setOperator(storage.get(STORAGE.operator));
  });
}

// ---- Connection -------------------------------------------------------------

function socketUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  let resume = state.lastId > 0 ? `?since=${state.lastId}` : '';
  if (resume && state.epoch) resume += `&epoch=${encodeURIComponent(state.epoch)}`;
  return `${scheme}//${location.host}/ws${resume}`;
}

function connect() {
  clearTimeout(state.retryTimer);
  state.retryTimer = 0;
  let socket;
  try {
    socket = new WebSocket(socketUrl());
  } catch (error) {
    console.warn('lanboard: cannot open a WebSocket', error);
    scheduleReconnect();
    return;
  }
  state.socket = socket;
  state.welcomed = false;
  setTimeout(() => {
    if (state.socket === socket && !state.welcomed) dropSocket();
  }, CONNECT_TIMEOUT_MS);
  // Events of a socket that has been replaced are ignored.
  socket.addEventListener('message', (event) => {
    if (state.socket === socket) receive(event.data);
  });
  socket.addEventListener('close', () => {
    if (state.socket === socket) disconnected();
  });
}

function disconnected() {
  state.socket = null;
  state.connected = false;
  // Replies to requests made on the old connection will never come. A post
  // among them stays in the outbox and goes again after the reconnect; an
  // edit, a deletion or a block is handed back to whoever asked.
  const lost = [...state.pending.values()];
  state.pending.clear();
  for (const request of lost) {
    if (request.id !== undefined) actionRefused(request, { code: 'disconnected' });
  }
  state.posting = null;
  setOlderLoading(false);
  setStatus(navigator.onLine === false ? 'offline' : 'reconnecting');
  if (state.welcomed) {
    scheduleReconnect();
    return;
  }
  // Refused before the welcome. Browsers hide a WebSocket's HTTP status, so
  // ask the API whether the passphrase is what is missing.
  checkAccess().then((access) => {
    if (access !== 'locked' && state.socket === null) scheduleReconnect();
  });
}

function scheduleReconnect() {
  clearTimeout(state.retryTimer);
  const ceilingMs = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** state.attempt);
  state.attempt = Math.min(state.attempt + 1, 16);
  // Between half and all of the ceiling, so that every page of a restarted
  // board does not come back in the same instant.
  const delayMs = ceilingMs / 2 + (Math.random() * ceilingMs) / 2;
  state.retryTimer = setTimeout(connect, delayMs);
}

/**
 * Replaces a socket that may have died silently (after sleep or a network
 * change); the new one resumes from the last message seen.
 */
function refreshConnection() {
  if (state.socket && state.welcomed) dropSocket();
  else reconnectNow();
}

/** Gives up the current socket at once and starts over. */
function dropSocket() {
  const socket = state.socket;
  if (!socket) return;
  // Forgotten first: on a dead connection its close event can take a long
  // time, and events of a replaced socket are ignored anyway.
  disconnected();
  socket.close();
}

function watchForWake() {
  let lastCheck = Date.now();
  setInterval(() => {
    const now = Date.now();
    if (now - lastCheck > SLEPT_AFTER_MS) refreshConnection();
    lastCheck = now;
  }, WAKE_CHECK_MS);
}

/** Skips the wait when there is reason to think the board is reachable again. */
function reconnectNow() {
  if (state.socket === null && !state.locked) {
    state.attempt = 0;
    connect();
  }
}

function setStatus(kind) {
  const text = {
    connecting: 'connecting…',
    connected: 'connected',
    locked: 'passphrase needed',
    reconnecting: 'reconnecting…',
    offline: 'offline',
  }[kind];
  ui.status.textContent = text;
  // "offline" is still a reconnecting page, just one that knows why.
  ui.status.dataset.state = kind === 'offline' ? 'reconnecting' : kind;
  ui.status.title = {
    connected: 'New messages appear as they are written.',
    locked: 'Enter the passphrase to open the board.',
  }[kind] || 'The page keeps trying to reach the board; nothing you typed is lost.';
  document.documentElement.dataset.connection = ui.status.dataset.state;
  updateSendButton();
}

// ---- Frames -----------------------------------------------------------------

function send(event, data, ack) {
  const socket = state.socket;
  if (!socket || socket.readyState !== WebSocket.OPEN) return false;
  const frame = ack === undefined ? { event, data } : { event, data, ack };
  socket.send(JSON.stringify(frame));
  return true;
}

/** Sends a frame that asks for a reply; returns its ack number, or 0 when offline. */
function request(event, data, meta) {
  const ack = state.nextAck;
  if (!send(event, data, ack)) return 0;
  state.nextAck += 1;
  state.pending.set(ack, meta);
  return ack;
}

function receive(text) {
  let frame;
  try {
    frame = JSON.parse(text);
  } catch {
    console.warn('lanboard: ignoring a frame that is not JSON', text);
    return;
  }
  // An own property only: `constructor`, `__proto__`, `toString` and the
  // rest of Object.prototype are unknown events, not handlers.
  const known = frame !== null && typeof frame === 'object' && Object.hasOwn(handlers, frame.event);
  if (known) {
    handlers[frame.event](frame);
  } else {
    console.warn('lanboard: ignoring an unknown event', frame && frame.event);
  }
}

const handlers = {
  'messages-available'(frame) {
    const messages = Array.isArray(frame.data) ? frame.data : [];
    const resumed = state.loaded;
    if (frame.gap === true) {
      // Too much was missed to replay: start over from the newest ones.
      clearMessages();
    }
    const added = addMessages(messages);
    state.epoch = typeof frame.epoch === 'string' ? frame.epoch : null;
    state.welcomed = true;
    state.loaded = true;
    state.connected = true;
    state.attempt = 0;
    setStatus('connected');
    // This page is one of them, whatever an earlier count said.
    if (!(Number(ui.online.dataset.count) >= 1)) setOnline(1);
    if (resumed) arrived(added);
    // Only now: a post stored before the connection dropped has just been
    // drawn from this welcome, and its resend will merely confirm it.
    sendOutbox();
  },

  'message-added'(frame) {
    const added = addMessages([frame.data]);
    // Once the new board has moved on, that it started over is old news.
    if (added.length > 0) ui.resetNote.hidden = true;
    arrived(added);
  },

  'message-edited'(frame) {
    const data = frame.data || {};
    passChange(data.change);
    if (!isMessage(data)) return;
    showEdited(data);
    whileReturning({ edited: data });
  },

  'message-deleted'(frame) {
    const data = frame.data || {};
    passChange(data.change);
    if (!Number.isSafeInteger(data.id)) return;
    removeMessage(data.id);
    whileReturning({ deleted: data.id });
  },

  ack(frame) {
    const request = takeRequest(frame.ack);
    if (!request) return;
    if (request.kind === 'post') posted(request.cid, frame.data);
    else if (request.id !== undefined) actionDone(request, frame.data || {});
  },

  error(frame) {
    const request = takeRequest(frame.ack);
    const problem = frame.data || {};
    if (request && request.kind === 'older') {
      setOlderLoading(false);
      announce('Older messages could not be loaded.');
      return;
    }
    if (request && request.kind === 'post') {
      refused(request.cid, problem);
      return;
    }
    if (request && request.id !== undefined) {
      actionRefused(request, problem);
      return;
    }
    showFormError(errorSentence(problem));
    updateSendButton();
  },

  'board-reset'(frame) {
    startOver(frame.data && frame.data.message);
  },

  'older-messages'(frame) {
    const request = takeRequest(frame.ack);
    // Asked for below a list that has been replaced since.
    if (request && request.view !== state.view) return;
    const data = frame.data || {};
    const messages = Array.isArray(data.messages) ? data.messages : [];
    addMessages(messages, 'older');
    state.noOlder = data.more === false;
    setOlderLoading(false);
    announce(
      messages.length === 0
        ? 'There are no older messages.'
        : `${messages.length} older ${messages.length === 1 ? 'message' : 'messages'} added at the end of the list.`,
    );
  },

  presence(frame) {
    setOnline(frame.data && frame.data.online);
  },
};

function takeRequest(ack) {
  if (ack === undefined || !state.pending.has(ack)) return null;
  const request = state.pending.get(ack);
  state.pending.delete(ack);
  return request;
}

function errorSentence(problem) {
  switch (problem.code) {
    case 'message-too-long':
      return `The message is longer than ${state.limits.max_message_chars} characters; shorten it and send again.`;
    case 'name-too-long':
      return `The name is longer than ${state.limits.max_name_chars} characters.`;
    case 'empty-message':
      return 'Write something first.';
    case 'rate-limited':
      return 'You are sending faster than the board allows; wait a moment and send again.';
    case 'storage-error':
    case 'unavailable':
      return 'The board could not save the message right now; it is still in the box, try again shortly.';
    case 'blocked':
      return Number.isFinite(problem.until)
        ? `The board's operator has blocked posts from this address until ${shortTime(new Date(problem.until))}.`
        : "The board's operator has blocked posts from this address for now.";
    case 'not-found':
      // A resend of a post the board stored and someone deleted since.
      return 'The message was posted, and has been deleted since.';
    default:
      return problem.message ? `The board refused the message: ${problem.message}` : 'The board refused the message.';
  }
}

// ---- The message list -------------------------------------------------------

/**
 * Inserts the messages not drawn before, in id order (newest on top); returns
 * them. Drawing is idempotent: a message already drawn is skipped, however
 * often it arrives (its `message-added`, its `ack`, a resume).
 *
 * Where the messages come from says which ones are repeats, without a record
 * of every id ever shown:
 * - `'feed'` (`messages-available`, `message-added`): the board's feed is in
 *   id order and a resume starts after `lastId`, so a feed message at or
 *   below `lastId` has been through the feed already; above it, only one
 *   drawn from an ack (`state.ahead`) is.
 * - `'ack'`: the reply to this page's own post. It can overtake the
 *   `message-added` of an earlier message, so resuming after its id could
 *   skip that one: it is drawn but does not move `lastId`, and is noted in
 *   `state.ahead` until the feed passes it. Acks come one post at a time, so
 *   the list itself can be asked whether the message is there.
 * - `'older'`: a page of history before the oldest message shown; anything
 *   not below it is shown already.
 *
 * While the list shows a found message's context (`state.context`), new
 * messages from the feed and acks are not drawn (the view must not move
 * under the reader) but counted, and returned all the same: they are news.
 */
function addMessages(messages, source = 'feed') {
  const added = [];
  const floor = state.lastId;
  const oldest = state.oldestId;
  const context = source === 'older' ? null : state.context;
  // Repeats inside one batch, which the rules above cannot see.
  const batch = new Set();
  for (const message of messages) {
    if (!isMessage(message) || batch.has(message.id)) continue;
    batch.add(message.id);
    const id = message.id;
    let drawn;
    if (source === 'feed') {
      drawn = id <= floor || state.ahead.has(id);
      state.lastId = Math.max(state.lastId, id);
    } else if (source === 'ack') {
      // Away from the live board, the list cannot tell: the count can.
      drawn = context ? id <= context.since || context.fresh.has(id) : itemOf(id) !== null;
      if (!drawn && id > state.lastId) state.ahead.add(id);
    } else {
      drawn = oldest !== 0 && id >= oldest;
    }
    if (drawn) continue;
    added.push(message);
    if (context) {
      if (id > context.since) context.fresh.add(id);
      whileReturning({ posted: message });
      continue;
    }
    insert(renderMessage(message), id);
  }
  forgetPassedAcks();
  if (WALL) {
    while (ui.list.children.length > WALL_KEEP) ui.list.lastElementChild.remove();
  }
  if (context) showNewCount();
  listChanged();
  return added;
}

/** After messages were drawn or replaced: where older ones continue, and the empty note. */
function listChanged() {
  const last = ui.list.lastElementChild;
  state.oldestId = last ? Number(last.dataset.id) : 0;
  ui.empty.hidden = ui.list.children.length > 0;
  updateOlderButton();
}

/** Drops the ids in `state.ahead` that the feed has passed. */
function forgetPassedAcks() {
  for (const id of state.ahead) {
    if (id <= state.lastId) state.ahead.delete(id);
  }
}

/**
 * An edit or deletion came through the feed as change `change`. Changes
 * take their ids from the posts' counter, and the feed is in one order, so
 * everything up to it has come through the feed: a resume starts after it
 * (the board sends, on resuming, the changes among the messages at or below
 * the point it is given). Never from an ack, which can overtake the feed.
 */
function passChange(change) {
  if (!Number.isSafeInteger(change) || change <= state.lastId) return;
  state.lastId = change;
  forgetPassedAcks();
}

/** The list item of message `id`, if the page shows it. */
function itemOf(id) {
  return Number.isSafeInteger(id) ? ui.list.querySelector(`[data-id="${id}"]`) : null;
}

function isMessage(value) {
  return (
    value !== null &&
    typeof value === 'object' &&
    Number.isSafeInteger(value.id) &&
    typeof value.name === 'string' &&
    typeof value.message === 'string'
  );
}

function insert(item, id) {
  // New messages go on top and older pages at the end, so both common cases
  // are one comparison; anything else walks down to its place.
  const first = ui.list.firstElementChild;
  if (!first || id > Number(first.dataset.id)) {
    ui.list.prepend(item);
    return;
  }
  const last = ui.list.lastElementChild;
  if (id < Number(last.dataset.id)) {
    ui.list.append(item);
    return;
  }
  for (const other of ui.list.children) {
    if (Number(other.dataset.id) < id) {
      other.before(item);
      return;
    }
  }
  ui.list.append(item);
}

/**
 * Forgets every message shown: what comes next is drawn as new. A found
 * message's context stays on screen: the live board is loaded anew when
 * the reader goes back to it, and what is new since it was left is still
 * told by `state.context.since`.
 */
function clearMessages() {
  if (state.context === null) {
    ui.list.replaceChildren();
    state.view += 1;
    state.oldestId = 0;
    state.noOlder = false;
  }
  state.lastId = 0;
  state.ahead.clear();
  forgetHeldNews();
}

/**
 * The board lost its history (its store was emptied) and began a new one:
 * nothing shown here exists any more. The list is emptied and the page loads
 * the new board from its start, as on its first load, never resuming with
 * `?since=`. Done in place rather than with `location.reload()`, which would
 * throw away a half-typed message; unconfirmed posts stay in the outbox and
 * go to the new board.
 *
 * Told on connecting (a resume from the lost history), the page is already
 * on its way: the board follows with the new board's `messages-available` on
 * the same connection. Told while connected, the page connects afresh, after
 * the usual jittered delay so that every page of the board does not come
 * back in the same instant.
 */
function startOver(reason) {
  console.info('lanboard: the board started over', reason);
  // A found message's context belongs to the history that was lost.
  leaveContext();
  clearMessages();
  state.epoch = null;
  state.loaded = false;
  state.unread = [];
  showUnread();
  ui.empty.hidden = false;
  updateOlderButton();
  ui.resetNote.hidden = false;
  announce('The board lost its earlier messages and started over.');
  if (state.welcomed) dropSocket();
}

function renderMessage(message) {
  const item = document.createElement('li');
  item.className = 'message';
  item.dataset.id = String(message.id);
  // With the id, what tells this browser's own posts (see `ownPosts`).
  item.dataset.time = String(message.time);

  const avatar = document.createElement('span');
  avatar.className = `avatar hue-${hue(message.name)}`;
  avatar.setAttribute('aria-hidden', 'true');
  avatar.textContent = initial(message.name);

  const content = document.createElement('div');
  content.className = 'content';

  const meta = document.createElement('div');
  meta.className = 'meta';
  const name = document.createElement('span');
  name.className = 'name';
  name.textContent = message.name;
  meta.append(name, renderTime(message.time));
  if (Number.isFinite(message.edited)) meta.append(renderEdited(message.edited));

  const body = document.createElement('p');
  body.className = 'body';
  appendWithLinks(body, message.message);
  // A post of files alone shows just its files.
  body.hidden = message.message === '';

  content.append(meta, body);
  const files = filesOf(message);
  if (files.length > 0) content.append(renderFiles(files));
  item.append(avatar, content);
  showActions(item);
  return item;
}

function renderTime(ms) {
  const time = document.createElement('time');
  time.className = 'time';
  const date = new Date(ms);
  if (Number.isNaN(date.getTime())) return time;
  time.dateTime = date.toISOString();
  time.textContent = shortTime(date);
  time.title = date.toLocaleString(undefined, { dateStyle: 'full', timeStyle: 'medium' });
  return time;
}

const pad = (n) => String(n).padStart(2, '0');

/** HH:MM, with the day in front when it is not today. */
function shortTime(date) {
  const clock = `${pad(date.getHours())}:${pad(date.getMinutes())}`;
  const now = new Date();
  if (date.toDateString() === now.toDateString()) return clock;
  const day = date.toLocaleDateString(undefined, {
    day: 'numeric',
    month: 'short',
    year: date.getFullYear() === now.getFullYear() ? undefined : 'numeric',
  });
  return `${day}, ${clock}`;
}

/** The first letter of a name, for its avatar. */
function initial(name) {
  const letter = Array.from(name.trim())[0] || '?';
  return letter.toLocaleUpperCase();
}

/** One of eight avatar colours, the same for the same name everywhere. */
function hue(name) {
  let hash = 0;
  for (const char of name) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return hash % 8;
}

/** http(s) addresses in running text; the trailing punctuation of a sentence is trimmed below. */
const LINK = /\bhttps?:\/\/[^\s<>"]+/gi;

/**
 * Appends `text` to `parent` as text nodes, with http and https addresses as
 * links that open in a new tab and tell the target nothing about the board.
 * Anything else, `javascript:` included, stays text.
 */
function appendWithLinks(parent, text) {
  let done = 0;
  for (const match of text.matchAll(LINK)) {
    const address = trimAddress(match[0]);
    const href = safeHref(address);
    if (!href) continue;
    parent.append(text.slice(done, match.index));
    const link = document.createElement('a');
    link.href = href;
    link.target = '_blank';
    link.rel = 'noopener noreferrer';
    link.textContent = address;
    parent.append(link);
    done = match.index + address.length;
  }
  parent.append(text.slice(done));
}

/** Drops punctuation that ends a sentence rather than the address. */
function trimAddress(address) {
  let end = address.length;
  for (;;) {
    const last = address[end - 1];
    const kept = address.slice(0, end);
    if ('.,;:!?\'*'.includes(last)) {
      end -= 1;
    } else if (last === ')' && count(kept, ')') > count(kept, '(')) {
      end -= 1;
    } else if (last === ']' && count(kept, ']') > count(kept, '[')) {
      end -= 1;
    } else {
      return address.slice(0, end);
    }
  }
}

const count = (text, char) => text.split(char).length - 1;

function safeHref(address) {
  try {
    const url = new URL(address);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
  } catch {
    return null;
  }
}

// ---- Edits, deletions and blocks --------------------------------------------

/**
 * The "edited" mark of an edited post. Its title tells when on hover; it
 * takes focus, so that keyboards and touch screens get the same (style.css
 * shows the title beside it while it has focus).
 */
function renderEdited(ms) {
  const mark = document.createElement('time');
  mark.className = 'edited';
  mark.textContent = 'edited';
  mark.tabIndex = 0;
  setEditedTime(mark, ms);
  return mark;
}

function setEditedTime(mark, ms) {
  const date = new Date(ms);
  if (Number.isNaN(date.getTime())) return;
  mark.dateTime = date.toISOString();
  mark.title = `Edited ${date.toLocaleString(undefined, { dateStyle: 'full', timeStyle: 'medium' })}`;
}

/**
 * Shows the new form of an edited message, if this page shows it. Edits
 * carry their change number, so one older than the edit shown (an ack can
 * overtake the feed) is left out. Only the text and the mark are replaced:
 * an edit box or a question open on the post stays.
 */
function showEdited(message) {
  const item = itemOf(message.id);
  if (!item) return;
  const change = Number.isSafeInteger(message.change) ? message.change : 0;
  if (change > 0 && change <= Number(item.dataset.change || 0)) return;
  if (change > 0) item.dataset.change = String(change);
  const body = item.querySelector('.body');
  body.replaceChildren();
  appendWithLinks(body, message.message);
  // Not while the edit box stands in for the text (`stopEditing` shows it).
  if (!item.querySelector('.editor')) body.hidden = message.message === '';
  const meta = item.querySelector('.meta');
  const mark = meta.querySelector('.edited');
  if (mark) setEditedTime(mark, message.edited);
  else meta.append(renderEdited(message.edited));
  // News not told yet tells of the message as it reads now.
  state.held = state.held.map((held) => (held.id === message.id ? message : held));
}

/**
 * Takes a deleted message off the page, and out of whatever counted it: the
 * unread count and the news not told yet. Focus inside it moves to the next
 * post, so that a keyboard user is not sent back to the top of the page.
 */
function removeMessage(id) {
  state.held = state.held.filter((message) => message.id !== id);
  if (state.context && state.context.fresh.delete(id)) showNewCount();
  const unread = state.unread.length;
  state.unread = state.unread.filter((other) => other !== id);
  if (state.unread.length !== unread) showUnread();
  const item = itemOf(id);
  if (!item) return;
  // Its image shown full size goes with it.
  if (ui.viewer.open && ui.viewer.dataset.id === String(id)) ui.viewer.close();
  const focused = item.contains(document.activeElement);
  const next = item.nextElementSibling || item.previousElementSibling;
  item.remove();
  // `oldestId` stays: older messages still continue below it.
  ui.empty.hidden = ui.list.children.length > 0;
  updateOlderButton();
  if (focused) {
    const target = next && next.querySelector('.actions:not([hidden]) button');
    (target || ui.list).focus();
  }
}

const isOwn = (item) => ownPosts.has(Number(item.dataset.id), Number(item.dataset.time));

function showAllActions() {
  for (const item of ui.list.children) showActions(item);
}

/**
 * The buttons under a post: Edit and Delete on this browser's own posts,
 * and in operator mode Delete and the blocks on everyone else's. Real
 * buttons, always shown, so that keyboards and touch screens reach them as
 * well as mice do. None on the wall. Drawn again only when what this
 * browser may do with the post changes, or when `reset`, so that a question
 * open on a post survives messages arriving around it.
 */
function showActions(item, reset = false) {
  if (WALL) return;
  const own = isOwn(item);
  const operator = state.operatorKey !== '';
  const may = `${own ? 'own' : ''} ${operator ? 'operator' : ''}`.trim();
  let bar = item.querySelector('.actions');
  if (may === '') {
    if (bar) bar.remove();
    return;
  }
  if (bar && bar.dataset.may === may && !reset) return;
  if (!bar) {
    bar = document.createElement('div');
    bar.className = 'actions';
    // Before a note on the post, if there is one.
    item.querySelector('.content').insertBefore(bar, item.querySelector('.item-note'));
  }
  bar.dataset.may = may;
  delete bar.dataset.ask;
  delete bar.dataset.minutes;
  delete bar.dataset.busy;
  bar.removeAttribute('role');
  bar.removeAttribute('aria-labelledby');
  const buttons = [];
  if (own) buttons.push(actionButton('Edit', 'edit'));
  buttons.push(actionButton('Delete', 'delete'));
  if (operator && !own) {
    for (const choice of BLOCK_CHOICES) {
      const block = actionButton(choice.label, 'block');
      block.dataset.minutes = String(choice.minutes);
      buttons.push(block);
    }
  }
  bar.replaceChildren(...buttons);
}

function actionButton(label, action, look = 'quiet action') {
  const button = document.createElement('button');
  button.type = 'button';
  button.className = `button small ${look}`;
  button.dataset.action = action;
  button.textContent = label;
  return button;
}

/**
 * Asks in the post itself, not with window.confirm (which some browsers
 * suppress and which stops the page), before a deletion or a block is
 * sent. Focus goes to Cancel, so a second Enter does not delete.
 */
function askFirst(item, action, minutes) {
  const bar = item.querySelector('.actions');
  if (!bar) return;
  hideNote(item);
  const choice = BLOCK_CHOICES.find((c) => c.minutes === minutes);
  let text;
  let yes;
  if (action === 'delete') {
    text = isOwn(item) ? 'Delete your message for everyone?' : 'Delete this message for everyone?';
    yes = 'Delete';
  } else if (choice) {
    text = `Block posts from this sender's address for ${choice.span}?`;
    yes = `Block for ${choice.span}`;
  } else {
    return;
  }
  const question = document.createElement('span');
  question.className = 'ask';
  question.id = `ask-${item.dataset.id}`;
  question.textContent = text;
  const cancel = actionButton('Cancel', 'cancel', '');
  bar.dataset.ask = action;
  bar.dataset.minutes = choice ? String(choice.minutes) : '';
  // Read out as the buttons' group when focus lands on Cancel.
  bar.setAttribute('role', 'group');
  bar.setAttribute('aria-labelledby', question.id);
  bar.replaceChildren(question, actionButton(yes, 'confirm', 'danger'), cancel);
  cancel.focus();
}

function cancelAsk(item) {
  const bar = item.querySelector('.actions');
  if (!bar || bar.dataset.busy) return;
  const { ask, minutes } = bar.dataset;
  showActions(item, true);
  focusAction(item, ask, minutes);
}

/** Sends the deletion or block the post's question was about. */
function confirmAction(item) {
  const bar = item.querySelector('.actions');
  if (!bar || bar.dataset.busy) return;
  const id = Number(item.dataset.id);
  const own = isOwn(item);
  let ack;
  if (bar.dataset.ask === 'delete') {
    // Their own posts with this browser's key, which works whatever became of the operator link.
    const key = own ? authorKey() : state.operatorKey;
    ack = request('delete-message', { id, key }, { kind: 'delete', id, operator: !own });
  } else {
    const minutes = Number(bar.dataset.minutes);
    const key = state.operatorKey;
    ack = request('block-sender', { id, minutes, key }, { kind: 'block', id, operator: true, minutes });
  }
  if (ack === 0) {
    const { ask, minutes } = bar.dataset;
    showActions(item, true);
    showNote(item, 'Not connected right now; try again once the board is back.', true);
    focusAction(item, ask, minutes);
    return;
  }
  // Marked busy rather than disabled: a disabled button would drop the focus.
  bar.dataset.busy = 'true';
  const [, yes, cancel] = bar.children;
  yes.textContent = bar.dataset.ask === 'delete' ? 'Deleting…' : 'Blocking…';
  for (const button of [yes, cancel]) button.setAttribute('aria-disabled', 'true');
}

/** Focuses the post's button for `action` (and `minutes`, for a block); false when there is none. */
function focusAction(item, action, minutes) {
  const which = minutes ? `[data-minutes="${Number(minutes)}"]` : '';
  const button = item.querySelector(`.actions [data-action="${action}"]${which}`);
  if (button) button.focus();
  return button !== null;
}

/** A line under a post about what was just done to it, or why it was not. */
function showNote(item, text, problem) {
  let note = item.querySelector('.item-note');
  if (!note) {
    note = document.createElement('p');
    // Focusable, for when the button that was focused is gone.
    note.tabIndex = -1;
    item.querySelector('.content').append(note);
  }
  note.className = problem ? 'item-note form-error' : 'item-note';
  note.textContent = text;
}

function hideNote(item) {
  const note = item.querySelector('.item-note');
  if (note) note.remove();
}

/**
 * Edits the post in place: its text becomes a box, where Enter saves,
 * Shift+Enter is a new line and Escape cancels. Refusals show under the box.
 */
function startEditing(item) {
  if (item.querySelector('.editor')) return;
  const id = item.dataset.id;
  const body = item.querySelector('.body');
  const box = document.createElement('textarea');
  box.className = 'edit-box';
  box.rows = 1;
  box.value = body.textContent;
  box.enterKeyHint = 'done';
  box.setAttribute('aria-label', 'Your message');
  const hint = document.createElement('p');
  hint.className = 'hint';
  hint.id = `edit-hint-${id}`;
  hint.textContent = 'Enter saves · Shift+Enter for a new line · Escape cancels';
  const problem = document.createElement('p');
  problem.className = 'form-error';
  problem.id = `edit-problem-${id}`;
  problem.setAttribute('role', 'alert');
  problem.hidden = true;
  box.setAttribute('aria-describedby', `${hint.id} ${problem.id}`);
  const foot = document.createElement('div');
  foot.className = 'editor-foot';
  foot.append(hint, actionButton('Save', 'save', 'primary'), actionButton('Cancel', 'cancel-edit', ''));
  const editor = document.createElement('div');
  editor.className = 'editor';
  editor.append(box, problem, foot);
  hideNote(item);
  body.hidden = true;
  const bar = item.querySelector('.actions');
  if (bar) bar.hidden = true;
  body.after(editor);
  fitHeight(box);
  box.focus();
  box.setSelectionRange(box.value.length, box.value.length);
}

/** Closes the post's edit box, if open, and shows its text and buttons again. */
function stopEditing(item) {
  const editor = item.querySelector('.editor');
  if (!editor) return;
  editor.remove();
  const body = item.querySelector('.body');
  body.hidden = body.textContent === '';
  const bar = item.querySelector('.actions');
  if (bar) bar.hidden = false;
}

function cancelEditing(item) {
  const editor = item.querySelector('.editor');
  if (!editor || editor.dataset.busy) return;
  stopEditing(item);
  focusAction(item, 'edit');
}

function saveEdit(item) {
  const editor = item.querySelector('.editor');
  if (!editor || editor.dataset.busy) return;
  const box = editor.querySelector('.edit-box');
  const text = box.value;
  const max = state.limits.max_message_chars;
  const used = Array.from(text.trimEnd()).length;
  let problem = '';
  // Also for a post with files: the board validates an edit's text as a
  // post of text alone, so it keeps at least a word.
  if (text.trim() === '') {
    problem = 'Write something, or delete the message instead.';
  } else if (used > max) {
    problem = `The message is ${used - max} characters over the limit of ${max}.`;
  } else if (text.trimEnd() === item.querySelector('.body').textContent) {
    // Nothing changed: nothing to send, and no "edited" mark for it.
    cancelEditing(item);
    return;
  } else {
    const id = Number(item.dataset.id);
    const data = { id, message: text, key: authorKey() };
    if (request('edit-message', data, { kind: 'edit', id, operator: false }) !== 0) {
      setEditorBusy(editor, true);
      return;
    }
    problem = 'Not connected right now. Your text stays here; save it once the board is back.';
  }
  showEditProblem(editor, problem);
  box.focus();
}

function setEditorBusy(editor, busy) {
  editor.querySelector('.edit-box').readOnly = busy;
  const save = editor.querySelector('[data-action="save"]');
  save.textContent = busy ? 'Saving…' : 'Save';
  for (const button of editor.querySelectorAll('button')) {
    if (busy) button.setAttribute('aria-disabled', 'true');
    else button.removeAttribute('aria-disabled');
  }
  if (busy) {
    editor.dataset.busy = 'true';
    showEditProblem(editor, '');
  } else {
    delete editor.dataset.busy;
  }
}

function showEditProblem(editor, text) {
  const problem = editor.querySelector('.form-error');
  problem.textContent = text;
  problem.hidden = text === '';
}

/** The board did what a post's button asked. */
function actionDone(request, data) {
  const item = itemOf(request.id);
  if (request.kind === 'edit') {
    if (isMessage(data)) showEdited(data);
    const editor = item && item.querySelector('.editor');
    if (editor && editor.dataset.busy) {
      const focused = editor.contains(document.activeElement);
      stopEditing(item);
      if (focused) focusAction(item, 'edit');
    }
    announce('Your edit is saved.');
  } else if (request.kind === 'delete') {
    removeMessage(request.id);
    announce('The message is deleted.');
  } else if (request.kind === 'block') {
    const text = Number.isFinite(data.until)
      ? `Posts from this sender's address are blocked until ${shortTime(new Date(data.until))}.`
      : "Posts from this sender's address are blocked.";
    if (item) {
      const focused = item.contains(document.activeElement);
      showActions(item, true);
      showNote(item, text, false);
      if (focused) focusAction(item, 'block', request.minutes);
    }
    announce(text);
  }
}

/** The board refused what a post's button asked (or the connection dropped first). */
function actionRefused(request, problem) {
  const text = actionProblem(request, problem);
  if (problem.code === 'forbidden') {
    // An operator secret the board refuses is from a link that was replaced:
    // keeping it would only count wrong guesses against this address. An
    // author key refused for a post means the post is not this browser's.
    if (request.operator) leaveOperatorMode();
    else ownPosts.forget(request.id);
  }
  announce(text);
  if (problem.code === 'not-found' && request.kind !== 'block') {
    // Deleted meanwhile; the board's word for it may still be on its way.
    removeMessage(request.id);
    return;
  }
  const item = itemOf(request.id);
  if (!item) return;
  const editor = item.querySelector('.editor');
  if (editor && request.kind === 'edit' && problem.code !== 'forbidden') {
    setEditorBusy(editor, false);
    showEditProblem(editor, text);
    return;
  }
  const focused = item.contains(document.activeElement);
  stopEditing(item);
  showActions(item, true);
  showNote(item, text, true);
  if (focused && !focusAction(item, request.kind, request.minutes)) item.querySelector('.item-note').focus();
}

function actionProblem(request, problem) {
  switch (problem.code) {
    case 'forbidden':
      return request.operator
        ? 'The operator link is no longer valid: it may have been replaced by a new one. ' +
            'Operator mode is off; open the current link to turn it on again.'
        : "The board did not accept this browser's key for that message, so it cannot be changed from here.";
    case 'not-found':
      return request.kind === 'block'
        ? 'The board does not know who sent that message (it was imported, or posted before senders ' +
            'were kept), so its sender cannot be blocked.'
        : 'That message had been deleted already.';
    case 'rate-limited':
      return 'The board refused too many keys from this address; wait a minute and try again.';
    case 'empty-message':
      return 'Write something, or delete the message instead.';
    case 'message-too-long':
      return `The message is longer than ${state.limits.max_message_chars} characters; shorten it.`;
    case 'disconnected':
      return 'The connection dropped before the board answered. Once the page is connected again, try again if it is still needed.';
    case 'storage-error':
    case 'storage-unavailable':
    case 'unavailable':
      return 'The board could not save that right now; try again shortly.';
    default:
      return problem.message ? `The board refused: ${problem.message}` : 'The board refused that.';
  }
}

/** What each button on a post does, by its `data-action`. */
const postActions = {
  edit: (item) => startEditing(item),
  delete: (item) => askFirst(item, 'delete'),
  block: (item, button) => askFirst(item, 'block', Number(button.dataset.minutes)),
  confirm: (item) => confirmAction(item),
  cancel: (item) => cancelAsk(item),
  save: (item) => saveEdit(item),
  'cancel-edit': (item) => cancelEditing(item),
};

/** One listener each for the buttons and keys of every post, rather than some per post. */
function setUpPostActions() {
  ui.list.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action]');
    const item = button && button.closest('.message');
    if (!item || button.getAttribute('aria-disabled') === 'true') return;
    const action = button.dataset.action;
    if (Object.hasOwn(postActions, action)) postActions[action](item, button);
  });
  ui.list.addEventListener('keydown', (event) => {
    const item = event.target.closest('.message');
    if (!item) return;
    if (event.target.closest('.editor')) {
      if (event.key === 'Escape') {
        event.preventDefault();
        cancelEditing(item);
      } else if (
        event.key === 'Enter' &&
        event.target.matches('.edit-box') &&
        !event.shiftKey &&
        !event.altKey &&
        // Enter that finishes an input method composition belongs to it.
        !event.isComposing
      ) {
        event.preventDefault();
        saveEdit(item);
      }
    } else if (event.key === 'Escape' && event.target.closest('.actions[data-ask]')) {
      event.preventDefault();
      cancelAsk(item);
    }
  });
  ui.list.addEventListener('input', (event) => {
    if (event.target.matches('.edit-box')) fitHeight(event.target);
  });
}

// ---- News: unread count, favicon, sound, notifications, screen readers -----

/** Reacts to messages that are new to this page (not its first load). */
function arrived(messages) {
  if (messages.length === 0) return;
  const newest = messages.reduce((a, b) => (b.id > a.id ? b : a));
  if (WALL) {
    const item = itemOf(newest.id);
    if (item) {
      item.classList.add('arrived');
      setTimeout(() => item.classList.remove('arrived'), ARRIVAL_MS);
    }
  }
  state.held.push(...messages);
  tellHeldNews();
}

/**
 * Tells the news held in `state.held`, once this page has no unconfirmed
 * post: by then every post's ack has named its message, and only the others'
 * messages are news. Deciding by text instead would take someone else's
 * message that happens to read the same as this page's (a "yes", a "+1") for
 * its own, and say nothing about it.
 */
function tellHeldNews() {
  if (outbox.posts.length > 0) return;
  const fromOthers = state.held.filter((message) => !state.ownIds.has(message.id));
  forgetHeldNews();
  tell(fromOthers);
}

function forgetHeldNews() {
  state.held = [];
  state.ownIds.clear();
}

/** Unread count, sound, notification and screen reader for others' new messages. */
function tell(fromOthers) {
  if (fromOthers.length === 0) return;
  if (document.hidden) {
    state.unread.push(...fromOthers.map((message) => message.id));
    showUnread();
  }
  const latest = fromOthers[fromOthers.length - 1];
  if (document.hidden || !document.hasFocus()) {
    beep();
    desktopNotification(latest, fromOthers.length);
  }
  announce(
    fromOthers.length === 1
      ? `${latest.name}: ${summary(latest)}`
      : `${fromOthers.length} new messages. Latest from ${latest.name}: ${summary(latest)}`,
  );
}

function announce(text) {
  const short = text.length > ANNOUNCE_MAX_CHARS ? `${text.slice(0, ANNOUNCE_MAX_CHARS)}…` : text;
  ui.announcer.textContent = short;
}

let dotIcon = '';

function showUnread() {
  const count = state.unread.length;
  document.title = count > 0 ? `(${count}) ${BASE_TITLE}` : BASE_TITLE;
  if (count > 0) {
    dotIcon = dotIcon || drawIcon(true);
    if (dotIcon) ui.favicon.href = dotIcon;
  } else {
    ui.favicon.href = '/favicon.svg';
  }
}

/**
 * The board's icon drawn on a canvas (the same shapes as favicon.svg), with
 * an unread dot; returned as a data: URL, which the page's policy allows.
 */
function drawIcon(withDot) {
  const size = 64;
  const canvas = document.createElement('canvas');
  canvas.width = size;
  canvas.height = size;
  const g = canvas.getContext('2d');
  if (!g) return '';
  const pill = (x, y, w, h, r) => {
    g.beginPath();
    g.roundRect(x, y, w, h, r);
    g.fill();
  };
  g.fillStyle = '#2f6db5';
  pill(0, 0, 64, 64, 14);
  g.fillStyle = '#ffffff';
  pill(13, 16, 38, 8, 4);
  g.globalAlpha = 0.82;
  pill(13, 28, 30, 8, 4);
  g.globalAlpha = 0.64;
  pill(13, 40, 20, 8, 4);
  g.globalAlpha = 1;
  if (withDot) {
    g.beginPath();
    g.arc(50, 50, 13, 0, 2 * Math.PI);
    g.fillStyle = '#ffffff';
    g.fill();
    g.beginPath();
    g.arc(50, 50, 10, 0, 2 * Math.PI);
    g.fillStyle = '#e5484d';
    g.fill();
  }
  return canvas.toDataURL('image/png');
}

let audio = null;

/** A short, quiet two-note chime; only after the reader switched sound on. */
function beep() {
  if (!state.sound) return;
  try {
    audio = audio || new AudioContext();
    const start = audio.currentTime + 0.01;
    [660, 880].forEach((frequency, index) => {
      const tone = audio.createOscillator();
      const volume = audio.createGain();
      const at = start + index * 0.12;
      tone.type = 'sine';
      tone.frequency.value = frequency;
      volume.gain.setValueAtTime(0.0001, at);
      volume.gain.exponentialRampToValueAtTime(0.12, at + 0.02);
      volume.gain.exponentialRampToValueAtTime(0.0001, at + 0.22);
      tone.connect(volume).connect(audio.destination);
      tone.start(at);
      tone.stop(at + 0.25);
    });
  } catch (error) {
    console.warn('lanboard: cannot play a sound', error);
  }
}

function desktopNotification(message, count) {
  if (!state.notify || !('Notification' in window) || Notification.permission !== 'granted') return;
  try {
    const title = count > 1 ? `${count} new messages on lanboard` : `${message.name} on lanboard`;
    const note = new Notification(title, { body: summary(message).slice(0, 300), tag: 'lanboard' });
    note.addEventListener('click', () => {
      window.focus();
      note.close();
    });
  } catch (error) {
    console.warn('lanboard: cannot show a notification', error);
  }
}

// ---- The form ---------------------------------------------------------------

function submitMessage() {
  clearFormError();
  waitForUploads(false);
  const text = ui.message.value;
  const attached = state.attachments;
  // A post may be files alone; it may not be nothing at all.
  if (text.trim() === '' && attached.length === 0) {
    ui.message.focus();
    return;
  }
  const used = Array.from(text.trimEnd()).length;
  if (used > state.limits.max_message_chars) {
    showFormError(
      `The message is ${used - state.limits.max_message_chars} characters over the limit of ${state.limits.max_message_chars}.`,
    );
    return;
  }
  // One post at a time: the next waits until the board has this one.
  if (outbox.posts.length > 0) return;
  const failed = attached.find((attachment) => attachment.state === 'failed');
  if (failed) {
    showFormError(`${failed.name} was not uploaded; remove it to send the post without it.`);
    return;
  }
  if (attached.some((attachment) => attachment.state === 'uploading')) {
    // Goes by itself once the last upload is done (`uploadsSettled`).
    waitForUploads(true);
    return;
  }
  if (!state.welcomed) {
    showFormError('Not connected right now. Your message stays here; send it once the board is back.');
    return;
  }
  const name = ui.name.value.trim();
  storage.set(STORAGE.name, name);
  const post = { cid: randomHex(), name, text, createdMs: Date.now() };
  if (attached.length > 0) post.files = attached.map((attachment) => attachment.file);
  outbox.add(post);
  sendOutbox();
  // A post goes on top of the live board: show it there.
  if (state.context) backToLatest(false);
}

/**
 * Sends the oldest unconfirmed post, unless one is already on its way or the
 * page is not connected (the welcome of the next connection calls this
 * again). Posts go one at a time so that they are stored in the order they
 * were written, even when one of them has to wait.
 */
function sendOutbox() {
  clearTimeout(state.pausedTimer);
  state.pausedTimer = 0;
  const post = outbox.posts[0];
  if (post && state.posting === null && state.welcomed) {
    const data = { name: post.name, message: post.text, cid: post.cid, key: authorKey() };
    // The same file attached twice is one file of the post.
    if (post.files) data.files = [...new Set(post.files.map((file) => file.id))];
    if (request('add-message', data, { kind: 'post', cid: post.cid }) !== 0) state.posting = post.cid;
  }
  updateSendButton();
}

/** The board stored the post (now or the first time it was sent) and answered with the message. */
function posted(cid, message) {
  state.posting = null;
  const post = outbox.remove(cid);
  // Usually drawn already from its `message-added`, which may also come just
  // after; drawn here too, so the box never empties before the list shows it.
  if (isMessage(message)) {
    state.ownIds.add(message.id);
    // Remembered before it is drawn, so that it is drawn with its Edit and
    // Delete; drawn from its `message-added` already, it gets them now.
    ownPosts.add(message);
    addMessages([message], 'ack');
    const item = itemOf(message.id);
    if (item) showActions(item);
  }
  // Only clear what was sent: text typed and files attached since stay.
  if (post && ui.message.value === post.text) {
    ui.message.value = '';
    messageEdited();
  }
  if (post && post.files) {
    const sent = new Set(post.files.map((file) => file.id));
    for (const attachment of [...state.attachments]) {
      if (attachment.state === 'done' && sent.has(attachment.file.id)) dropAttachment(attachment);
    }
  }
  setPaused(false);
  clearFormError();
  tellHeldNews();
  sendOutbox();
}

/** The board did not store the post: it waits and goes again, or is given back to the writer. */
function refused(cid, problem) {
  state.posting = null;
  // `unavailable` is a board shutting down: its successor will take the post.
  if (problem.code === 'storage-unavailable' || problem.code === 'unavailable') {
    setPaused(true);
    const delayMs = PAUSED_RETRY_MS * (0.75 + Math.random() * 0.5);
    state.pausedTimer = setTimeout(sendOutbox, delayMs);
    return;
  }
  // Refused for good (too long, too fast, ...): sending it again would not
  // help. The text goes back to the box, where a reloaded page may not have it.
  const post = outbox.remove(cid);
  if (post && ui.message.value.trim() === '') {
    ui.message.value = post.text;
    messageEdited();
  }
  // A file the board no longer has is named in the refusal (one that no
  // post carries is removed an hour after its upload): it must be attached
  // again, so its chip goes rather than failing the next send too.
  const said = typeof problem.message === 'string' ? problem.message : '';
  const gone = post && post.files && problem.code === 'bad-request' ? post.files.filter((file) => said.includes(file.id)) : [];
  const goneIds = new Set(gone.map((file) => file.id));
  for (const attachment of [...state.attachments]) {
    if (attachment.state === 'done' && goneIds.has(attachment.file.id)) dropAttachment(attachment);
  }
  if (post && post.files && state.attachments.length === 0) {
    for (const file of post.files) {
      if (!goneIds.has(file.id)) addUploaded(file);
    }
  }
  setPaused(false);
  showFormError(
    gone.length > 0
      ? `The board no longer has ${gone.map((file) => file.name).join(', ')} (an upload is kept for an hour ` +
          `until a post carries it); attach ${gone.length === 1 ? 'it' : 'them'} again and send.`
      : errorSentence(problem),
  );
  tellHeldNews();
  sendOutbox();
}

function setPaused(paused) {
  state.paused = paused;
  updateSendButton();
}

function updateSendButton() {
  ui.send.disabled = !state.connected || outbox.posts.length > 0 || state.sendWhenUploaded;
  showSendingPaused();
}

/**
 * The `#sending-paused` notice, shown while a post waits for more than its
 * usual moment: for the board to come back, or for its storage to.
 */
function showSendingPaused() {
  let why = '';
  if (outbox.posts.length > 0 && !state.connected) {
    why = 'The page is not connected to the board. Your message is kept and goes out by itself once it is.';
  } else if (outbox.posts.length > 0 && state.paused) {
    why =
      'The board cannot save messages right now. Your message is kept and goes out by itself ' +
      'as soon as it can; there is no need to send it again.';
  }
  const reason = why === '' ? '' : state.connected ? 'storage' : 'connection';
  // Written only on a change, so that screen readers announce it once.
  if (ui.paused.dataset.reason !== reason) {
    ui.paused.dataset.reason = reason;
    ui.pausedWhy.textContent = why;
    ui.paused.hidden = why === '';
  }
}

function showFormError(text) {
  ui.formError.textContent = text;
  ui.formError.hidden = false;
}

function clearFormError() {
  ui.formError.hidden = true;
  ui.formError.textContent = '';
}

/** Counter and height after any change to the message box. */
function messageEdited() {
  const max = state.limits.max_message_chars;
  const used = Array.from(ui.message.value).length;
  ui.counter.hidden = used < Math.floor(max * COUNTER_FROM);
  ui.counter.textContent = `${used} / ${max}`;
  ui.counter.classList.toggle('over', used > max);
  fitHeight(ui.message);
}

/** Grows a text box with its text up to its CSS max-height; past that it scrolls inside. */
function fitHeight(box) {
  box.style.height = 'auto';
  box.style.height = `${box.scrollHeight + 2}px`;
}

function setUpForm() {
  ui.name.value = storage.get(STORAGE.name) || '';
  ui.name.addEventListener('change', () => storage.set(STORAGE.name, ui.name.value.trim()));
  ui.form.addEventListener('submit', (event) => {
    event.preventDefault();
    submitMessage();
  });
  ui.message.addEventListener('keydown', (event) => {
    // Enter sends; Shift+Enter is a new line; Enter that finishes an input
    // method composition (Japanese, Chinese, ...) belongs to the composition.
    if (event.key !== 'Enter' || event.shiftKey || event.altKey || event.isComposing) return;
    event.preventDefault();
    submitMessage();
  });
  ui.message.addEventListener('input', messageEdited);
  // On phones the keyboard covers the lower half: keep the form in sight.
  for (const field of [ui.name, ui.message]) {
    field.addEventListener('focus', () => {
      setTimeout(() => ui.form.scrollIntoView({ block: 'nearest' }), 250);
    });
  }
  if (window.visualViewport) {
    window.visualViewport.addEventListener('resize', () => {
      if (ui.form.contains(document.activeElement)) ui.form.scrollIntoView({ block: 'nearest' });
    });
  }
}

// ---- Files ------------------------------------------------------------------

/** What the board calls a file: the hex of its content's SHA-256. */
const FILE_ID = /^[0-9a-f]{64}$/;

/** True for a File as the board describes one: `{id, name, size, type}`. */
function isFile(value) {
  return (
    value !== null &&
    typeof value === 'object' &&
    typeof value.id === 'string' &&
    FILE_ID.test(value.id) &&
    typeof value.name === 'string' &&
    Number.isSafeInteger(value.size) &&
    value.size >= 0 &&
    typeof value.type === 'string'
  );
}

/** The well-formed files of a message, in its order; none when it has none. */
function filesOf(message) {
  return Array.isArray(message.files) ? message.files.filter(isFile) : [];
}

/** Where the board serves a file; the id is 64 hex digits, so nothing in it needs escaping. */
const fileUrl = (file) => `/files/${file.id}`;

const isPreview = (file) => PREVIEW_TYPES.has(file.type.toLowerCase());
/** Audio and video, which the board serves inline only once their content looked like it (`files/media.rs`). */
const isMedia = (file) => /^(audio|video)\//i.test(file.type);

/** What a message says, for a notification or a screen reader: its text, and its files by name. */
function summary(message) {
  const names = filesOf(message).map((file) => file.name);
  if (names.length === 0) return message.message;
  const files = names.length === 1 ? names[0] : `${names.length} files: ${names.join(', ')}`;
  return message.message.trim() === '' ? files : `${message.message} (${files})`;
}

/**
 * A size as file managers show it, in units of 1024 with their everyday
 * names: "812 bytes", "48.3 KB", "25 MB".
 */
function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} ${bytes === 1 ? 'byte' : 'bytes'}`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const shown = value >= 100 ? Math.round(value) : Math.round(value * 10) / 10;
  return `${shown} ${units[unit]}`;
}

const ARCHIVE_NAME = /\.(zip|7z|rar|tar|tgz|gz|bz2|xz|zst)$/i;
const ARCHIVE_TYPE = /zip|compressed|x-tar|gzip|bzip|x-xz|zstd|rar/;
const TEXT_NAME = /\.(txt|md|csv|log|json|xml|ya?ml|toml|ini|conf)$/i;
const TEXT_TYPE = /^text\/|json|xml|yaml|toml|javascript/;

/** The kind of a file, for its icon: by its media type, else by its name. */
function kindOf(file) {
  const type = file.type.toLowerCase();
  if (type.startsWith('image/')) return 'image';
  if (type.startsWith('audio/')) return 'audio';
  if (type.startsWith('video/')) return 'video';
  if (type === 'application/pdf' || /\.pdf$/i.test(file.name)) return 'pdf';
  if (ARCHIVE_TYPE.test(type) || ARCHIVE_NAME.test(file.name)) return 'archive';
  if (TEXT_TYPE.test(type) || TEXT_NAME.test(file.name)) return 'text';
  return 'other';
}

/** Each kind's word on its chip, and the label of its icon when the name has no short extension. */
const KINDS = {
  image: { word: 'Image', label: 'IMG' },
  audio: { word: 'Audio', label: 'AUD' },
  video: { word: 'Video', label: 'VID' },
  pdf: { word: 'PDF', label: 'PDF' },
  archive: { word: 'Archive', label: 'ZIP' },
  text: { word: 'Text', label: 'TXT' },
  other: { word: 'File', label: 'FILE' },
};

/**
 * A file's icon: a page with a folded corner in its kind's colour (style.css),
 * labelled with its extension (up to four letters), else its kind. Drawn
 * inline, so the page needs no image files.
 */
function fileIcon(file) {
  const kind = kindOf(file);
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('class', `file-icon kind-${kind}`);
  svg.setAttribute('viewBox', '0 0 32 40');
  svg.setAttribute('width', '26');
  svg.setAttribute('height', '32');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  const page = document.createElementNS(ns, 'path');
  page.setAttribute('class', 'file-icon-page');
  page.setAttribute('d', 'M5 1h16l10 10v25a3 3 0 0 1-3 3H5a3 3 0 0 1-3-3V4a3 3 0 0 1 3-3z');
  const fold = document.createElementNS(ns, 'path');
  fold.setAttribute('class', 'file-icon-fold');
  fold.setAttribute('d', 'M21 1v7a3 3 0 0 0 3 3h7');
  const label = document.createElementNS(ns, 'text');
  label.setAttribute('class', 'file-icon-label');
  label.setAttribute('x', '16');
  label.setAttribute('y', '31');
  label.setAttribute('text-anchor', 'middle');
  const extension = /\.([a-z0-9]{1,4})$/i.exec(file.name);
  label.textContent = extension ? extension[1].toUpperCase() : KINDS[kind].label;
  // Four letters are squeezed to fit the page, rather than run over its edges.
  if (label.textContent.length > 3) {
    label.setAttribute('textLength', '24');
    label.setAttribute('lengthAdjust', 'spacingAndGlyphs');
  }
  svg.append(page, fold, label);
  return svg;
}

/**
 * A message's files: its images as previews (at most 320×240, or the
 * width of a phone, in their own proportions) that open full size, its
 * audio and video as players, each with its chip, then everything else as
 * chips that download.
 */
function renderFiles(files) {
  const block = document.createElement('div');
  block.className = 'files';
  const previews = files.filter(isPreview);
  const media = files.filter(isMedia);
  const others = files.filter((file) => !isPreview(file) && !isMedia(file));
  if (previews.length > 0) {
    const row = document.createElement('div');
    row.className = 'file-previews';
    row.append(...previews.map(renderPreview));
    block.append(row);
  }
  block.append(...media.map(renderPlayer));
  if (others.length > 0) {
    const list = document.createElement('div');
    list.className = 'file-chips';
    list.append(...others.map(renderFileChip));
    block.append(list);
  }
  return block;
}

/** An image of a post: a link to the file, which the page opens in its viewer (`openViewer`). */
function renderPreview(file) {
  const link = document.createElement('a');
  link.className = 'file-preview';
  link.href = fileUrl(file);
  link.title = `${file.name} (${formatSize(file.size)}): open full size`;
  const image = document.createElement('img');
  // Before the source: an image told to load lazily after it has one may have started already.
  image.loading = 'lazy';
  image.alt = file.name;
  image.src = fileUrl(file);
  link.append(image);
  return link;
}

/**
 * Audio or video: the browser's own player, and under it the chip that
 * downloads the file (the browser may not play every format; the board
 * serves these inline, with ranges, so the player can seek). Audio loads
 * nothing until played; video loads its first frame and length.
 */
function renderPlayer(file) {
  const video = file.type.toLowerCase().startsWith('video/');
  const player = document.createElement(video ? 'video' : 'audio');
  player.className = 'file-player';
  player.controls = true;
  player.preload = video ? 'metadata' : 'none';
  if (video) player.playsInline = true;
  player.src = fileUrl(file);
  player.setAttribute('aria-label', file.name);
  const box = document.createElement('div');
  box.className = 'file-media';
  box.append(player, renderFileChip(file));
  return box;
}

/** Any other file: its icon, name and size, as a link that downloads it under its name. */
function renderFileChip(file) {
  const link = document.createElement('a');
  link.className = 'file-chip';
  link.href = fileUrl(file);
  link.download = file.name;
  // The whole name, where the chip has to cut it short.
  link.title = file.name;
  const text = document.createElement('span');
  text.className = 'file-text';
  const name = document.createElement('span');
  name.className = 'file-name';
  name.textContent = file.name;
  const size = document.createElement('span');
  size.className = 'file-size';
  size.textContent = `${KINDS[kindOf(file)].word} · ${formatSize(file.size)}`;
  text.append(name, size);
  link.append(fileIcon(file), text);
  return link;
}

// ---- Files: the viewer ------------------------------------------------------

/** The preview whose image the viewer shows, to give the focus back to. */
let viewerOpener = null;

/** Shows a preview's image full size in the `#viewer` dialog, with its name and a download link. */
function openViewer(link) {
  const image = link.querySelector('img');
  const href = link.getAttribute('href');
  ui.viewerImage.src = href;
  ui.viewerImage.alt = image.alt;
  ui.viewerName.textContent = image.alt;
  ui.viewerDownload.href = href;
  ui.viewerDownload.download = image.alt;
  const item = link.closest('.message');
  ui.viewer.dataset.id = item ? item.dataset.id : '';
  viewerOpener = link;
  ui.viewer.showModal();
}

function setUpViewer() {
  ui.list.addEventListener('click', (event) => {
    const link = event.target.closest('a.file-preview');
    // A click with a modifier (a new tab, a download) is the browser's to handle.
    if (!link || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    openViewer(link);
  });
  ui.viewerClose.addEventListener('click', () => ui.viewer.close());
  // The dialog fills the screen, its figure in the middle: a click that
  // lands on the dialog itself is beside the image, on the dimmed page.
  ui.viewer.addEventListener('click', (event) => {
    if (event.target === ui.viewer) ui.viewer.close();
  });
  // Escape closes a modal dialog by itself; every way of closing ends here.
  ui.viewer.addEventListener('close', () => {
    ui.viewerImage.removeAttribute('src');
    delete ui.viewer.dataset.id;
    if (viewerOpener && viewerOpener.isConnected) viewerOpener.focus();
    viewerOpener = null;
  });
}

// ---- Files: attaching and uploading -----------------------------------------

/** Counts attachments, for their chips' keys. */
let attachmentKeys = 0;

/** Whether the board takes files: one whose store keeps none says so with a limit of 0. */
const takesFiles = () => state.limits.max_file_bytes > 0 && state.limits.max_files_per_message > 0;

/** Whether files may be attached now: on a page with the form, once the board is open. */
const canAttach = () => !WALL && takesFiles() && !document.documentElement.classList.contains('locked');

/**
 * Attaches `blobs` (Files) to the post being written: each is checked
 * against the board's limits, gets a chip under the message box and is
 * uploaded at once. What is refused is said in the form.
 */
function attach(blobs) {
  if (!canAttach()) return;
  const problems = [];
  const { max_file_bytes: maxBytes, max_files_per_message: maxFiles } = state.limits;
  for (const blob of blobs) {
    const name = blob.name || 'file';
    if (blob.size > maxBytes) {
      // Told before a byte is sent: the board would only refuse it at the end.
      problems.push(tooLarge(name, blob.size, maxBytes));
    } else if (state.attachments.length >= maxFiles) {
      problems.push(`A post takes up to ${maxFiles} files; ${name} was left out.`);
    } else {
      const attachment = addAttachment({ name, size: blob.size, type: blob.type, state: 'uploading' });
      upload(attachment, blob);
    }
  }
  if (problems.length > 0) showFormError(problems.join(' '));
}

/** "photo.png is 31.2 MB; the board takes files up to 25 MB.", in bytes where rounding would hide the difference. */
function tooLarge(name, size, max) {
  const [shown, limit] = formatSize(size) === formatSize(max)
    ? [`${size.toLocaleString()} bytes`, `${max.toLocaleString()} bytes`]
    : [formatSize(size), formatSize(max)];
  return `${name} is ${shown}; the board takes files up to ${limit}.`;
}

/** A file the board has already (a post given back, or left in the outbox by a closed page). */
function addUploaded(file) {
  const attachment = addAttachment({ name: file.name, size: file.size, type: file.type, state: 'done' });
  attachment.file = file;
  showAttachment(attachment);
}

/** Adds an attachment and its chip: its icon, name, progress and remove button. */
function addAttachment(fields) {
  attachmentKeys += 1;
  const attachment = { key: String(attachmentKeys), loaded: 0, file: null, problem: '', request: null, ...fields };
  const chip = document.createElement('li');
  chip.className = 'attachment';
  chip.dataset.key = attachment.key;
  chip.title = attachment.name;
  const text = document.createElement('span');
  text.className = 'file-text';
  const name = document.createElement('span');
  name.className = 'file-name';
  name.textContent = attachment.name;
  const detail = document.createElement('span');
  detail.className = 'file-size';
  const bar = document.createElement('progress');
  bar.className = 'upload-progress';
  bar.max = 1;
  bar.setAttribute('aria-label', `Upload of ${attachment.name}`);
  text.append(name, detail, bar);
  const remove = document.createElement('button');
  remove.type = 'button';
  remove.className = 'button quiet small remove';
  remove.dataset.action = 'remove';
  remove.setAttribute('aria-label', `Remove ${attachment.name}`);
  remove.textContent = '×';
  chip.append(fileIcon(attachment), text, remove);
  Object.assign(attachment, { chip, detail, bar });
  state.attachments.push(attachment);
  ui.attachments.append(chip);
  ui.attachments.hidden = false;
  showAttachment(attachment);
  return attachment;
}

/** Brings an attachment's chip up to date with its state and progress. */
function showAttachment(attachment) {
  const { chip, detail, bar } = attachment;
  chip.dataset.state = attachment.state;
  bar.hidden = attachment.state !== 'uploading';
  bar.value = attachment.size > 0 ? attachment.loaded / attachment.size : 0;
  if (attachment.state === 'uploading') {
    detail.textContent = `Uploading ${Math.floor(bar.value * 100)}% of ${formatSize(attachment.size)}`;
  } else if (attachment.state === 'done') {
    detail.textContent = formatSize(attachment.size);
  } else {
    detail.textContent = attachment.problem.charAt(0).toUpperCase() + attachment.problem.slice(1);
  }
}

/**
 * Uploads one file: `POST /api/files?name=` with the file as the body and
 * its type, through XMLHttpRequest for its upload progress. The board
 * answers with the File it keeps (201 new, 200 known already) or a problem.
 */
function upload(attachment, blob) {
  const xhr = new XMLHttpRequest();
  attachment.request = xhr;
  xhr.open('POST', `/api/files?name=${encodeURIComponent(attachment.name)}`);
  xhr.setRequestHeader('Content-Type', blob.type || 'application/octet-stream');
  xhr.responseType = 'json';
  xhr.upload.addEventListener('progress', (event) => {
    attachment.loaded = Math.min(event.loaded, attachment.size);
    showAttachment(attachment);
  });
  xhr.addEventListener('load', () => {
    const answer = xhr.response;
    if ((xhr.status === 200 || xhr.status === 201) && isFile(answer)) {
      uploaded(attachment, answer);
    } else {
      uploadFailed(attachment, xhr.status, answer);
    }
  });
  xhr.addEventListener('error', () => uploadFailed(attachment, 0, null));
  // `abort` comes only from `dropAttachment`, which has let the attachment go already.
  xhr.send(blob);
}

function uploaded(attachment, file) {
  attachment.request = null;
  attachment.file = file;
  attachment.loaded = attachment.size;
  attachment.state = 'done';
  showAttachment(attachment);
  announce(`${attachment.name} is uploaded.`);
  uploadsSettled();
}

function uploadFailed(attachment, status, answer) {
  attachment.request = null;
  attachment.state = 'failed';
  attachment.problem = uploadProblem(status, answer);
  showAttachment(attachment);
  if (status === 401) {
    // The login is gone (the board forgot it): ask for the passphrase.
    dropSocket();
    lock();
  }
  const waited = state.sendWhenUploaded;
  waitForUploads(false);
  showFormError(
    `${attachment.name} could not be uploaded: ${attachment.problem}` +
      (waited ? ' The post was not sent; remove the file to send it without.' : ''),
  );
}

/** Why an upload failed, in the board's words when it gave some. */
function uploadProblem(status, answer) {
  const said = answer !== null && typeof answer === 'object' && typeof answer.message === 'string' ? answer.message.trim() : '';
  // The board's words are a clause ("the file is larger than ..."): made a sentence here.
  if (said) return /[.!?]$/.test(said) ? said : `${said}.`;
  switch (status) {
    case 0:
      return 'the board cannot be reached right now.';
    case 401:
      return 'the board needs its passphrase again.';
    case 413:
      return `it is larger than the board takes (${formatSize(state.limits.max_file_bytes)}).`;
    case 429:
      return 'too many posts at once; wait a moment and attach it again.';
    case 507:
      return 'the board has no room for more files.';
    default:
      return `the board answered HTTP ${status}.`;
  }
}

/** Takes an attachment off the post, stopping its upload if it is still running. */
function dropAttachment(attachment) {
  if (attachment.request) attachment.request.abort();
  attachment.request = null;
  state.attachments = state.attachments.filter((other) => other !== attachment);
  attachment.chip.remove();
  ui.attachments.hidden = state.attachments.length === 0;
}

/** The remove button of a chip: the attachment goes, and focus to the next chip or the message box. */
function removeAttachment(key) {
  const attachment = state.attachments.find((other) => other.key === key);
  if (!attachment) return;
  const next = attachment.chip.nextElementSibling || attachment.chip.previousElementSibling;
  const focused = attachment.chip.contains(document.activeElement);
  dropAttachment(attachment);
  // The form's error was about this file's failed upload.
  if (attachment.state === 'failed') clearFormError();
  if (focused) (next ? next.querySelector('.remove') : ui.message).focus();
  announce(`${attachment.name} removed.`);
  uploadsSettled();
}

/** Marks the post as waiting for its uploads (or no longer). */
function waitForUploads(waiting) {
  state.sendWhenUploaded = waiting;
  ui.sendingFiles.hidden = !waiting;
  updateSendButton();
}

/** An upload finished or was removed: a post waiting for the uploads goes once none is left. */
function uploadsSettled() {
  if (!state.sendWhenUploaded) return;
  if (state.attachments.some((attachment) => attachment.state === 'uploading')) return;
  submitMessage();
}

/** Whether a drag carries files (not text or a link dragged from a page). */
const carriesFiles = (event) => event.dataTransfer !== null && [...event.dataTransfer.types].includes('Files');

function showDropZone(shown) {
  ui.dropZone.hidden = !shown;
  if (!shown) state.dragDepth = 0;
}

/** Paste, drop and the attach button: three ways to attach. */
function setUpAttaching() {
  ui.attach.addEventListener('click', () => ui.fileInput.click());
  ui.fileInput.addEventListener('change', () => {
    attach([...ui.fileInput.files]);
    // Emptied, so that choosing the same file again is a change too.
    ui.fileInput.value = '';
  });
  ui.attachments.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action="remove"]');
    const chip = button && button.closest('.attachment');
    if (chip) removeAttachment(chip.dataset.key);
  });

  // Anywhere on the page: a screenshot pasted into the message box, or
  // with nothing focused.
  document.addEventListener('paste', (event) => {
    const data = event.clipboardData;
    if (!data || data.files.length === 0 || !canAttach()) return;
    // Cells copied from a spreadsheet (or a passage of a document) come as
    // plain text, rich text and a picture of them: pasted into a field, the
    // text is what is meant. An image copied from a web page has rich text
    // but no plain text, and a file copied in a file manager plain text
    // (its name) but no rich text: those are attached.
    const field = event.target.closest && event.target.closest('input, textarea, [contenteditable]');
    if (field && data.types.includes('text/plain') && data.types.includes('text/html')) return;
    event.preventDefault();
    attach([...data.files]);
  });

  // The drop zone shows from the drag entering the page until it leaves or
  // drops. Entering a child comes before leaving its parent, so the count
  // stays above 0 while the drag moves about the page.
  document.addEventListener('dragenter', (event) => {
    if (!carriesFiles(event) || !canAttach()) return;
    event.preventDefault();
    state.dragDepth += 1;
    showDropZone(true);
  });
  document.addEventListener('dragover', (event) => {
    if (!carriesFiles(event) || !canAttach()) return;
    // Without this, the browser would open the dropped file in place of the board.
    event.preventDefault();
    event.dataTransfer.dropEffect = 'copy';
  });
  document.addEventListener('dragleave', (event) => {
    if (!carriesFiles(event)) return;
    state.dragDepth -= 1;
    if (state.dragDepth <= 0) showDropZone(false);
  });
  document.addEventListener('drop', (event) => {
    if (!carriesFiles(event) || !canAttach()) return;
    event.preventDefault();
    showDropZone(false);
    attach([...event.dataTransfer.files]);
    ui.message.focus();
  });
}

function setUpFiles() {
  setUpViewer();
  if (!WALL) setUpAttaching();
}

// ---- Older messages ---------------------------------------------------------

function updateOlderButton() {
  ui.older.hidden = WALL || state.oldestId <= 1 || state.noOlder;
  if (ui.older.hidden && document.activeElement === ui.older) ui.list.focus();
}

function setOlderLoading(loading) {
  ui.older.disabled = loading;
  ui.older.textContent = loading ? 'Loading older messages…' : 'Show older messages';
  ui.older.setAttribute('aria-busy', String(loading));
  updateOlderButton();
}

function loadOlder() {
  if (ui.older.disabled || state.oldestId <= 1) return;
  const meta = { kind: 'older', view: state.view };
  const ack = request('load-older', { before: state.oldestId, limit: OLDER_PAGE }, meta);
  if (ack !== 0) setOlderLoading(true);
}

// ---- Presence, invite, options ---------------------------------------------

function setOnline(count) {
  if (!Number.isSafeInteger(count)) return;
  ui.online.textContent = `${count} online`;
  ui.online.dataset.count = String(count);
}

/** `/api/info`: `{access: 'open', info}`, `{access: 'locked'}` or `{access: 'unknown'}`. */
async function fetchInfo() {
  try {
    const response = await fetch('/api/info', { cache: 'no-store' });
    if (response.status === 401) return { access: 'locked' };
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    return { access: 'open', info: await response.json() };
  } catch (error) {
    console.warn('lanboard: /api/info is unavailable', error);
    return { access: 'unknown' };
  }
}

function applyInfo(info) {
  if (info.limits) {
    state.limits = { ...state.limits, ...info.limits };
    ui.name.maxLength = state.limits.max_name_chars;
    ui.attach.hidden = !takesFiles();
    messageEdited();
  }
  if (!ui.online.dataset.count) setOnline(info.online);
  const urls = Array.isArray(info.urls) ? info.urls.filter((url) => typeof url === 'string') : [];
  showInvite(urls);
}

const isLoopback = (url) => /^https?:\/\/(127\.|\[::1\]|localhost)/.test(url);
// The board's `--mdns` name: listed first, but the QR code keeps to an address.
const isName = (url) => /^https?:\/\/[^/:[\]]+\.local(:|\/|$)/i.test(url);

function showInvite(urls) {
  const shared = urls.filter((url) => !isLoopback(url));
  const shown = shared.length > 0 ? shared : urls;
  ui.inviteLocal.hidden = shared.length > 0;
  ui.inviteUrls.replaceChildren(
    ...shown.map((url) => {
      const item = document.createElement('li');
      const text = document.createElement('span');
      text.className = 'url';
      text.textContent = url;
      const copy = document.createElement('button');
      copy.type = 'button';
      copy.className = 'button quiet copy';
      copy.textContent = 'Copy';
      copy.setAttribute('aria-label', `Copy ${url}`);
      copy.addEventListener('click', () => copyText(url, text, copy));
      item.append(text, copy);
      return item;
    }),
  );
  // The code encodes the first address (never the .local name, which phones
  // resolve unevenly); it is useless when only this computer can open it.
  const coded = shared.find((url) => !isName(url));
  if (coded) {
    ui.qr.alt = `QR code of ${coded}`;
    ui.qr.src = '/api/qr.svg';
  }
  ui.qr.hidden = !coded;
  ui.qrNote.hidden = ui.qr.hidden;
}

async function copyText(text, node, button) {
  let copied = false;
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      copied = true;
    } catch {
      // Refused (no permission or no focus): fall back to selecting it.
    }
  }
  if (!copied) {
    // Plain-HTTP pages have no clipboard API: select the address so that
    // Ctrl+C (or the phone's copy bubble) takes it, and try the old command.
    const range = document.createRange();
    range.selectNodeContents(node);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    try {
      copied = document.execCommand('copy');
    } catch {
      copied = false;
    }
  }
  button.textContent = copied ? 'Copied' : 'Press Ctrl+C';
  announce(copied ? 'Address copied.' : 'Address selected; press Ctrl+C to copy it.');
  setTimeout(() => {
    button.textContent = 'Copy';
  }, COPIED_MS);
}

function setPressed(button, on) {
  button.setAttribute('aria-pressed', String(on));
}

function setUpOptions() {
  state.sound = storage.get(STORAGE.sound) === 'on';
  setPressed(ui.sound, state.sound);
  ui.sound.addEventListener('click', () => {
    state.sound = !state.sound;
    setPressed(ui.sound, state.sound);
    storage.set(STORAGE.sound, state.sound ? 'on' : 'off');
    if (state.sound) {
      // Created inside the click, browsers let the page play sound later.
      try {
        audio = audio || new AudioContext();
        audio.resume();
      } catch (error) {
        console.warn('lanboard: no audio', error);
      }
    }
  });
  // A remembered "on" still needs one interaction before audio may start.
  const unlock = () => {
    if (audio) audio.resume();
    else if (state.sound) {
      try {
        audio = new AudioContext();
      } catch {
        // No audio in this browser; the chime stays silent.
      }
    }
  };
  document.addEventListener('pointerdown', unlock, { once: true });
  document.addEventListener('keydown', unlock, { once: true });

  setUpNotifications();

  ui.download.addEventListener('click', downloadHistory);
  ui.older.addEventListener('click', loadOlder);
  ui.panelToggle.addEventListener('click', () => {
    const open = ui.panelToggle.getAttribute('aria-expanded') !== 'true';
    ui.panelToggle.setAttribute('aria-expanded', String(open));
    ui.sidebar.classList.toggle('open', open);
  });
  ui.qr.addEventListener('error', () => {
    ui.qr.hidden = true;
    ui.qrNote.hidden = true;
  });
}

function setUpNotifications() {
  const hint = (text) => {
    ui.notifyHint.textContent = text;
    ui.notifyHint.hidden = !text;
  };
  if (!window.isSecureContext) {
    ui.notify.disabled = true;
    hint(
      'Browsers only allow notifications on HTTPS or localhost addresses; this page was opened over plain HTTP.',
    );
    return;
  }
  if (!('Notification' in window)) {
    ui.notify.disabled = true;
    hint('This browser has no desktop notifications.');
    return;
  }
  state.notify = storage.get(STORAGE.notify) === 'on' && Notification.permission === 'granted';
  setPressed(ui.notify, state.notify);
  ui.notify.addEventListener('click', async () => {
    if (state.notify) {
      state.notify = false;
    } else {
      let permission = Notification.permission;
      if (permission === 'default') permission = await Notification.requestPermission();
      state.notify = permission === 'granted';
      hint(permission === 'denied' ? 'Notifications are blocked for this page in the browser settings.' : '');
    }
    setPressed(ui.notify, state.notify);
    storage.set(STORAGE.notify, state.notify ? 'on' : 'off');
  });
}

// ---- Passphrase -------------------------------------------------------------

/**
 * Opens the board: reads `/api/info`, then connects. The browser's login
 * cookie goes along by itself; when the board answers 401 (no login yet, or
 * one the board no longer knows), the passphrase form is shown instead.
 */
async function openBoard() {
  const result = await fetchInfo();
  if (result.access === 'locked') {
    lock();
    return;
  }
  if (result.access === 'open') applyInfo(result.info);
  connect();
}

/** After a refused connection: `'locked'` when the passphrase form is shown. */
async function checkAccess() {
  const result = await fetchInfo();
  if (result.access === 'locked') lock();
  return result.access;
}

async function logIn(passphrase) {
  let response;
  try {
    response = await fetch('/api/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ password: passphrase }),
    });
  } catch {
    return 'unreachable';
  }
  if (response.ok) return 'ok';
  if (response.status === 401) return 'wrong';
  if (response.status === 429) return 'limited';
  return 'unreachable';
}

function lock() {
  state.locked = true;
  clearTimeout(state.retryTimer);
  document.documentElement.classList.add('locked');
  ui.login.hidden = false;
  setStatus('locked');
  ui.password.focus();
}

function setUpLogin() {
  ui.loginForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const passphrase = ui.password.value;
    if (passphrase === '') {
      ui.password.focus();
      return;
    }
    const submit = ui.loginForm.querySelector('button[type=submit]');
    submit.disabled = true;
    const result = await logIn(passphrase);
    submit.disabled = false;
    if (result !== 'ok') {
      ui.loginError.textContent = {
        wrong: 'That is not the passphrase. Check it and try again.',
        limited: 'Too many tries; wait a few seconds and try again.',
        unreachable: 'The board cannot be reached right now; try again in a moment.',
      }[result];
      ui.loginError.hidden = false;
      ui.password.select();
      return;
    }
    // Only the cookie the board just set is kept, never the passphrase.
    ui.password.value = '';
    ui.loginError.hidden = true;
    ui.login.hidden = true;
    state.locked = false;
    state.attempt = 0;
    document.documentElement.classList.remove('locked');
    setStatus('connecting');
    if (!WALL) ui.message.focus();
    openBoard();
  });
}

// ---- Download ---------------------------------------------------------------

async function downloadHistory() {
  ui.download.disabled = true;
  ui.download.setAttribute('aria-busy', 'true');
  const label = ui.download.textContent;
  ui.download.textContent = 'Preparing…';
  try {
    const all = [];
    let since = 0;
    for (;;) {
      const response = await fetch(`/api/messages?since=${since}&limit=${DOWNLOAD_PAGE}`, { cache: 'no-store' });
      if (response.status === 401) {
        // The login is gone (the board forgot it): ask for the passphrase.
        dropSocket();
        lock();
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const page = await response.json();
      if (!Array.isArray(page) || page.length === 0) break;
      all.push(...page);
      since = page[page.length - 1].id;
    }
    const blob = new Blob([`${JSON.stringify(all, null, 2)}\n`], { type: 'application/json' });
    const url = URL.createObjectURL(blob);
    const link = document.createElement('a');
    const today = new Date();
    link.href = url;
    link.download = `lanboard-${today.getFullYear()}-${pad(today.getMonth() + 1)}-${pad(today.getDate())}.json`;
    document.body.append(link);
    link.click();
    link.remove();
    // The browser has read the blob once the click is handled; free it later.
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    announce(`Downloaded ${all.length} messages.`);
  } catch (error) {
    console.warn('lanboard: download failed', error);
    announce('The history could not be downloaded.');
  } finally {
    ui.download.textContent = label;
    ui.download.disabled = false;
    ui.download.removeAttribute('aria-busy');
  }
}

// ---- Search -----------------------------------------------------------------

/**
 * The search field asks `/api/search` as the reader types (after a short
 * pause, dropping answers to anything but the latest request) and lists the
 * results in `#search-results`, a listbox the field controls: focus stays in
 * the field, and `aria-activedescendant` names the result the arrow keys
 * chose. The words a result matched are `<mark>`s built from its
 * `highlights`, offsets in characters (Unicode scalar values, so counted
 * with `Array.from`, never in UTF-16 units); text still only reaches the
 * page through text nodes.
 */
const search = {
  timer: 0,
  /** Counts requests: an answer to any but the latest is dropped. */
  seq: 0,
  /** The request on its way, aborted when a newer one starts. */
  controller: null,
  /** The query the results shown answer, and the results, newest first. */
  query: '',
  results: [],
  more: false,
  /** The result the arrow keys chose: an index into the options, -1 for none. */
  active: -1,
  /** Counts the found messages asked for: only the latest one is shown. */
  opening: 0,
};

function setUpSearch() {
  if (WALL) {
    // The wall is read-only and for reading from afar: no search.
    ui.searchToggle.remove();
    ui.searchBox.remove();
    return;
  }
  ui.search.addEventListener('input', () => {
    clearTimeout(search.timer);
    if (ui.search.value.trim() === '') {
      forgetResults();
      return;
    }
    search.timer = setTimeout(() => runSearch(false), SEARCH_DEBOUNCE_MS);
  });
  ui.search.addEventListener('keydown', searchKey);
  ui.search.addEventListener('focus', () => {
    if (search.query !== '' && search.query === ui.search.value.trim()) openResults();
  });
  ui.searchForm.addEventListener('submit', (event) => {
    event.preventDefault();
    runSearch(false);
  });
  // Clicking a result must not take the focus out of the field first.
  ui.searchPanel.addEventListener('pointerdown', (event) => event.preventDefault());
  ui.searchResults.addEventListener('click', (event) => {
    const option = event.target.closest('[role="option"]');
    if (option) choose(option);
  });
  ui.searchResults.addEventListener('mousemove', (event) => {
    const option = event.target.closest('[role="option"]');
    const index = [...ui.searchResults.children].indexOf(option);
    if (index >= 0 && index !== search.active) setActive(index, false);
  });
  ui.searchBox.addEventListener('focusout', (event) => {
    if (!ui.searchBox.contains(event.relatedTarget)) closeResults();
  });
  document.addEventListener('pointerdown', (event) => {
    if (!ui.searchBox.contains(event.target) && !ui.searchToggle.contains(event.target)) closeResults();
  });
  ui.searchToggle.addEventListener('click', () => {
    if (ui.searchBox.classList.contains('open') && document.activeElement !== ui.search) {
      ui.search.focus();
      return;
    }
    showSearchRow(!ui.searchBox.classList.contains('open'));
    if (ui.searchBox.classList.contains('open')) ui.search.focus();
  });
  // `/` goes to the search field from anywhere but a place where it is typed.
  document.addEventListener('keydown', (event) => {
    if (event.key !== '/' || event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented) return;
    if (event.target.closest && event.target.closest('input, textarea, select, [contenteditable]')) return;
    if (document.documentElement.classList.contains('locked')) return;
    event.preventDefault();
    showSearchRow(true);
    ui.search.focus();
    ui.search.select();
  });
  ui.backToLatest.addEventListener('click', () => backToLatest(true));
  ui.newer.addEventListener('click', loadNewer);
}

/** On a phone the field has a row of its own under the bar, opened by its button. */
function showSearchRow(open) {
  ui.searchBox.classList.toggle('open', open);
  ui.searchToggle.setAttribute('aria-expanded', String(open));
}

function searchKey(event) {
  if (event.isComposing) return;
  const count = ui.searchResults.children.length;
  if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
    event.preventDefault();
    if (ui.searchPanel.hidden) {
      if (search.query !== '' && search.query === ui.search.value.trim()) openResults();
      else if (ui.search.value.trim() !== '') runSearch(false);
      return;
    }
    if (count === 0) return;
    // Down from the field goes to the first result, up from the first back to the field.
    const next = event.key === 'ArrowDown' ? Math.min(search.active + 1, count - 1) : search.active - 1;
    setActive(Math.max(next, -1));
  } else if (event.key === 'Enter') {
    event.preventDefault();
    const option = ui.searchPanel.hidden ? null : ui.searchResults.children[search.active];
    if (option) choose(option);
    else runSearch(false);
  } else if (event.key === 'Escape') {
    event.preventDefault();
    const wasEmpty = ui.search.value === '' && ui.searchPanel.hidden;
    ui.search.value = '';
    forgetResults();
    // A second Escape in the empty field puts the phone's row away.
    if (wasEmpty && getComputedStyle(ui.searchToggle).display !== 'none') {
      showSearchRow(false);
      ui.searchToggle.focus();
    }
  }
}

/** Asks the board for the field's query, or with `more` for the results after those shown. */
async function runSearch(more) {
  clearTimeout(search.timer);
  const query = more ? search.query : ui.search.value.trim();
  if (query === '') {
    forgetResults();
    return;
  }
  search.seq += 1;
  const seq = search.seq;
  if (search.controller) search.controller.abort();
  const controller = new AbortController();
  search.controller = controller;
  let url = `/api/search?q=${encodeURIComponent(query)}&limit=${SEARCH_PAGE}`;
  if (more && search.results.length > 0) url += `&before=${search.results[search.results.length - 1].id}`;
  ui.searchPanel.setAttribute('aria-busy', 'true');
  if (more) setMoreLabel('Loading more results…');
  let answer;
  try {
    const response = await fetch(url, { cache: 'no-store', signal: controller.signal });
    const body = await response.json().catch(() => null);
    answer = { status: response.status, body };
  } catch {
    answer = { status: 0, body: null };
  }
  // Typed on, or cleared, meanwhile: this answer is for a query no longer asked.
  if (seq !== search.seq) return;
  search.controller = null;
  ui.searchPanel.removeAttribute('aria-busy');
  const body = answer.body;
  if (answer.status !== 200 || body === null || !Array.isArray(body.results)) {
    if (more) setMoreLabel('More results');
    showSearchProblem(searchProblem(answer));
    if (answer.status === 401) {
      // The login is gone (the board forgot it): ask for the passphrase.
      dropSocket();
      lock();
    }
    return;
  }
  const hits = body.results.filter(isMessage);
  if (more) {
    const shown = new Set(search.results.map((hit) => hit.id));
    search.results.push(...hits.filter((hit) => !shown.has(hit.id)));
  } else {
    search.query = query;
    search.results = hits;
  }
  search.more = body.more === true;
  showResults(more ? hits.length : -1);
}

function searchProblem(answer) {
  const said = answer.body && typeof answer.body.message === 'string' ? answer.body.message : '';
  switch (answer.status) {
    case 400:
      return said ? `The board cannot search for that: ${said}.` : 'The board cannot search for that.';
    case 401:
      return 'The board needs its passphrase again.';
    case 404:
      return 'This board cannot search: it runs an older lanboard.';
    case 429:
      return 'Too many searches at once; wait a moment and try again.';
    default:
      return 'Search is unavailable right now; try again in a moment.';
  }
}

/**
 * Draws the results. After "More results" (`added` results at the end),
 * the first of them becomes the active one, so that the keyboard goes on
 * where it was; after a new query none is.
 */
function showResults(added) {
  const options = search.results.map(renderHit);
  if (search.more) {
    const more = document.createElement('li');
    more.id = 'search-more';
    more.className = 'search-more';
    more.setAttribute('role', 'option');
    more.setAttribute('aria-selected', 'false');
    more.textContent = 'More results';
    options.push(more);
  }
  ui.searchResults.replaceChildren(...options);
  ui.searchResults.dataset.query = search.query;
  const count = search.results.length;
  ui.searchStatus.classList.remove('problem');
  ui.searchStatus.textContent =
    count === 0
      ? 'No messages match'
      : `${count} ${count === 1 ? 'message matches' : 'messages match'}${search.more ? ', more below' : ''}`;
  openResults();
  setActive(added >= 0 ? Math.min(count - added, count - 1) : -1);
}

function setMoreLabel(text) {
  const more = byId('search-more');
  if (more) more.textContent = text;
}

function showSearchProblem(text) {
  ui.searchStatus.classList.add('problem');
  ui.searchStatus.textContent = text;
  openResults();
}

/** One result: name, time and (a stretch of) the text, matched words marked. */
function renderHit(hit) {
  const option = document.createElement('li');
  option.id = `search-hit-${hit.id}`;
  option.className = 'search-hit';
  option.dataset.id = String(hit.id);
  option.setAttribute('role', 'option');
  option.setAttribute('aria-selected', 'false');
  const highlights = hit.highlights !== null && typeof hit.highlights === 'object' ? hit.highlights : {};
  const meta = document.createElement('span');
  meta.className = 'search-meta';
  const name = document.createElement('span');
  name.className = 'name';
  appendMarked(name, Array.from(hit.name), cleanRanges(highlights.name, Array.from(hit.name).length));
  meta.append(name, renderTime(hit.time));
  const text = document.createElement('span');
  text.className = 'search-text';
  const chars = Array.from(hit.message);
  const part = snippet(chars, cleanRanges(highlights.message, chars.length));
  if (part.start > 0) text.append('…');
  appendMarked(text, part.chars, part.ranges);
  if (part.end < chars.length) text.append('…');
  const files = filesOf(hit);
  if (files.length > 0) {
    const note = document.createElement('span');
    note.className = 'search-files';
    note.textContent = files.length === 1 ? files[0].name : `${files.length} files`;
    meta.append(note);
  }
  option.append(meta, text);
  return option;
}

/**
 * The well-formed ranges of `ranges` (`[start, end]`, end exclusive, within
 * `length` characters), in order, overlapping and touching ones joined.
 */
function cleanRanges(ranges, length) {
  if (!Array.isArray(ranges)) return [];
  const valid = ranges
    .filter(
      (r) =>
        Array.isArray(r) && Number.isSafeInteger(r[0]) && Number.isSafeInteger(r[1]) && r[0] >= 0 && r[0] < r[1] && r[1] <= length,
    )
    .map((r) => [r[0], r[1]])
    .sort((a, b) => a[0] - b[0]);
  const joined = [];
  for (const range of valid) {
    const last = joined[joined.length - 1];
    if (last && range[0] <= last[1]) last[1] = Math.max(last[1], range[1]);
    else joined.push(range);
  }
  return joined;
}

/**
 * The stretch of a long text a result shows: SNIPPET_CHARS characters
 * starting a little before the first match, with the ranges in it moved to
 * its start. `start` and `end` say where it lies in the whole.
 */
function snippet(chars, ranges) {
  if (chars.length <= SNIPPET_CHARS) return { chars, ranges, start: 0, end: chars.length };
  const first = ranges.length > 0 ? ranges[0][0] : 0;
  const start = Math.max(0, Math.min(first - SNIPPET_LEAD_CHARS, chars.length - SNIPPET_CHARS));
  const end = start + SNIPPET_CHARS;
  const inside = ranges
    .filter(([from, to]) => to > start && from < end)
    .map(([from, to]) => [Math.max(from, start) - start, Math.min(to, end) - start]);
  return { chars: chars.slice(start, end), ranges: inside, start, end };
}

/** Appends `chars` as text, the `ranges` (clean, in order) of it inside `<mark>`s. */
function appendMarked(parent, chars, ranges) {
  let done = 0;
  for (const [start, end] of ranges) {
    if (start > done) parent.append(chars.slice(done, start).join(''));
    const mark = document.createElement('mark');
    mark.textContent = chars.slice(start, end).join('');
    parent.append(mark);
    done = end;
  }
  if (done < chars.length) parent.append(chars.slice(done).join(''));
}

function openResults() {
  ui.searchPanel.hidden = false;
  ui.search.setAttribute('aria-expanded', 'true');
}

function closeResults() {
  ui.searchPanel.hidden = true;
  ui.search.setAttribute('aria-expanded', 'false');
  setActive(-1);
}

/** Drops the results and any search on its way (the field was cleared). */
function forgetResults() {
  clearTimeout(search.timer);
  search.seq += 1;
  if (search.controller) search.controller.abort();
  search.controller = null;
  search.query = '';
  search.results = [];
  search.more = false;
  ui.searchResults.replaceChildren();
  delete ui.searchResults.dataset.query;
  ui.searchStatus.textContent = '';
  ui.searchPanel.removeAttribute('aria-busy');
  closeResults();
}

/** Marks option `index` as the chosen one (none for -1), scrolled into the panel's view unless `scroll` is false. */
function setActive(index, scroll = true) {
  const options = ui.searchResults.children;
  search.active = index >= 0 && index < options.length ? index : -1;
  for (let i = 0; i < options.length; i += 1) {
    options[i].setAttribute('aria-selected', String(i === search.active));
  }
  const option = options[search.active];
  if (option) {
    ui.search.setAttribute('aria-activedescendant', option.id);
    if (scroll) option.scrollIntoView({ block: 'nearest' });
  } else {
    ui.search.removeAttribute('aria-activedescendant');
  }
}

/** Opens a result, or loads more of them. */
function choose(option) {
  if (option.id === 'search-more') {
    runSearch(true);
    return;
  }
  const id = Number(option.dataset.id);
  if (Number.isSafeInteger(id)) showInContext(id);
}

// ---- A found message in its context -----------------------------------------

/**
 * Shows message `id` among the messages around it, in place of the live
 * board: the feed goes on underneath (new messages are counted on "Back to
 * latest", edits and deletions of what is shown apply), but nothing moves
 * the reader's view until they go back.
 */
async function showInContext(id) {
  search.opening += 1;
  const opening = search.opening;
  closeResults();
  const answer = await getMessages(`around=${id}&limit=${CONTEXT_SIDE}`);
  if (opening !== search.opening) return;
  if (!answer.page) {
    showSearchProblem(`The message could not be shown: ${answer.problem}`);
    ui.search.focus();
    return;
  }
  const left = state.context;
  // A new context object, also when one is shown: a "Back to latest" on its
  // way for the one shown is overtaken by this later choice.
  state.context = {
    since: left ? left.since : state.lastId,
    fresh: left ? left.fresh : new Set(),
    newer: answer.newer,
    returning: null,
  };
  state.view += 1;
  ui.list.replaceChildren(...drawable(answer.page).map(renderMessage));
  state.noOlder = !answer.more;
  setOlderLoading(false);
  listChanged();
  showContextControls();
  const item = itemOf(id);
  if (!item) {
    // Deleted since it was found: its neighbours are all there is.
    announce('That message has been deleted since; the messages around it are shown.');
    ui.list.focus({ preventScroll: true });
    ui.list.scrollIntoView({ block: 'start' });
    return;
  }
  item.classList.add('found');
  item.tabIndex = -1;
  scrollToFound(item);
  item.focus({ preventScroll: true });
}

/**
 * Scrolls the found message to the middle of what the sticky form and the
 * "Back to latest" bar leave of the screen, or, when it is taller than
 * that, its start to the top of it (`scrollIntoView` knows neither).
 */
function scrollToFound(item) {
  const covered = WALL ? 0 : ui.form.offsetHeight;
  const free = window.innerHeight - covered - ui.contextBar.offsetHeight - 16;
  const box = item.getBoundingClientRect();
  const top = covered + 8 + Math.max(0, (free - box.height) / 2);
  window.scrollBy(0, box.top - top);
}

/**
 * `GET /api/messages?<query>`: `{page, more, newer}` (`more` for older
 * messages left out, `newer` for newer ones) or `{problem}`, a sentence.
 */
async function getMessages(query) {
  let response;
  try {
    response = await fetch(`/api/messages?${query}`, { cache: 'no-store' });
  } catch {
    return { problem: 'the board cannot be reached right now.' };
  }
  const body = await response.json().catch(() => null);
  if (response.status === 401) {
    dropSocket();
    lock();
  }
  if (!response.ok || !Array.isArray(body)) {
    const said = body && typeof body.message === 'string' ? body.message : `HTTP ${response.status}`;
    return { problem: `the board said ${said}.` };
  }
  return {
    page: body,
    more: response.headers.get('Lanboard-More') === 'true',
    newer: response.headers.get('Lanboard-Newer') === 'true',
  };
}

/** The messages of a page, oldest first, as the list draws them: newest first, each once. */
function drawable(page) {
  const seen = new Set();
  return page.filter((m) => isMessage(m) && !seen.has(m.id) && seen.add(m.id)).reverse();
}

function showContextControls() {
  const away = state.context !== null;
  ui.contextNote.hidden = !away;
  ui.contextBar.hidden = !away;
  ui.newer.hidden = !away || !state.context.newer;
  document.documentElement.classList.toggle('in-context', away);
  showNewCount();
}

/** "Back to latest", with how many messages were posted since the live board was left. */
function showNewCount() {
  const fresh = state.context ? state.context.fresh.size : 0;
  ui.contextNew.textContent = fresh > 0 ? ` · ${fresh} new` : '';
}

/** Notes a feed event while the latest messages are on their way, to apply over them. */
function whileReturning(event) {
  if (state.context && state.context.returning) state.context.returning.push(event);
}

/** Forgets the context shown (the board started over): the live board is what comes next. */
function leaveContext() {
  if (state.context === null) return;
  state.context = null;
  search.opening += 1;
  showContextControls();
}

/**
 * Back to the live board: the latest messages are loaded anew (as many as
 * a new page gets), the feed's events since the request are applied over
 * them, and the page shows its top. With `focus`, the list takes the focus
 * (the reader pressed the button); a post sent from a context leaves it in
 * the form.
 */
async function backToLatest(focus) {
  const context = state.context;
  if (context === null || context.returning) return;
  context.returning = [];
  search.opening += 1;
  ui.backToLatest.setAttribute('aria-busy', 'true');
  const answer = await getMessages('');
  ui.backToLatest.removeAttribute('aria-busy');
  // The board started over meanwhile, which showed the live board already.
  if (state.context !== context) return;
  if (!answer.page) {
    context.returning = null;
    announce(`The latest messages could not be loaded: ${answer.problem} Try again in a moment.`);
    return;
  }
  state.context = null;
  state.view += 1;
  ui.list.replaceChildren(...drawable(answer.page).map(renderMessage));
  state.noOlder = !answer.more;
  for (const event of context.returning) {
    if (event.posted) {
      if (!itemOf(event.posted.id)) insert(renderMessage(event.posted), event.posted.id);
    } else if (event.edited) {
      showEdited(event.edited);
    } else {
      removeMessage(event.deleted);
    }
  }
  setOlderLoading(false);
  listChanged();
  showContextControls();
  window.scrollTo({ top: 0 });
  if (focus) ui.list.focus({ preventScroll: true });
  announce('Back to the latest messages.');
}

/** Loads the messages after the newest one of a context, keeping the view where it is. */
async function loadNewer() {
  const context = state.context;
  const top = ui.list.firstElementChild;
  if (context === null || !top || ui.newer.disabled) return;
  ui.newer.disabled = true;
  ui.newer.textContent = 'Loading newer messages…';
  const answer = await getMessages(`since=${Number(top.dataset.id)}&limit=${OLDER_PAGE}`);
  ui.newer.disabled = false;
  ui.newer.textContent = 'Show newer messages';
  if (state.context !== context || context.returning) return;
  if (!answer.page) {
    announce(`Newer messages could not be loaded: ${answer.problem}`);
    return;
  }
  // What the reader looks at stays in place while the list grows above it:
  // the first message in sight, or the one after it when that is the old
  // top one, which gains a border above its text and so moves what follows.
  const inSight = [...ui.list.children].find((item) => item.getBoundingClientRect().bottom > 0) || top;
  const anchor = inSight === top ? top.nextElementSibling || top : inSight;
  const before = anchor.getBoundingClientRect().top;
  const fresh = drawable(answer.page).filter((m) => !itemOf(m.id));
  for (const message of fresh) insert(renderMessage(message), message.id);
  window.scrollBy(0, anchor.getBoundingClientRect().top - before);
  context.newer = answer.more;
  listChanged();
  showContextControls();
  announce(
    fresh.length === 0
      ? 'There are no newer messages.'
      : `${fresh.length} newer ${fresh.length === 1 ? 'message' : 'messages'} added at the top of the list.`,
  );
  if (!context.newer && document.activeElement === ui.newer) ui.list.focus({ preventScroll: true });
}

// ---- Start ------------------------------------------------------------------

function start() {
  document.title = BASE_TITLE;
  for (const key of RETIRED_KEYS) storage.remove(key);
  if (WALL) {
    document.documentElement.classList.add('wall');
    // Read-only: the form leaves the page rather than hiding in it.
    ui.form.remove();
    byId('invite-heading').textContent = 'Join this board';
    byId('invite-lead').textContent = 'Open this address on your laptop or phone';
    ui.older.hidden = true;
  } else {
    setUpForm();
    // The wall never posts; a page with the form sends what an earlier page
    // of this browser could not.
    outbox.load();
    if (outbox.posts.length > 0 && ui.message.value === '') {
      ui.message.value = outbox.posts[0].text;
      messageEdited();
      for (const file of outbox.posts[0].files || []) addUploaded(file);
    }
  }
  setUpOptions();
  setUpLogin();
  // The wall takes an operator link too, only to get it out of the address bar.
  setUpOwnPosts();
  if (!WALL) setUpPostActions();
  setUpFiles();
  setUpSearch();
  setStatus('connecting');
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) return;
    state.unread = [];
    showUnread();
    reconnectNow();
  });
  window.addEventListener('online', refreshConnection);
  watchForWake();
  window.addEventListener('offline', () => {
    if (!state.connected) setStatus('offline');
  });
  openBoard();
}

start();
