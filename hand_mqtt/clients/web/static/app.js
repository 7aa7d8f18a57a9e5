// hand-mqtt's browser page: MQTT over websockets with the topic contract of docs/topics.md.
//
// The page is one more MQTT client. It shows the arbiter's retained desired state, the device
// service's reported state and availability and the arbiter's errors, and sends the same
// commands as every other client. Whether this account may send commands is the broker's
// decision: on every connection the page publishes a probe to <base>/bridge/set, which every
// role that may command may also write, and which the arbiter ignores; then a message to its
// own echo topic. If the echo comes back before the probe, the broker dropped the probe, and
// the page is read-only.
(() => {
  'use strict';

  const FINGERS = ['index', 'middle', 'ring', 'pinky', 'thumb'];
  const MIN_ANGLE = 0;
  const MAX_ANGLE = 180;
  const NUDGE = 15;
  const SLIDER_INTERVAL_MS = 50; // a slider drag sends at most 20 commands a second
  const ANSWER_TIMEOUT_MS = 5000; // then the page says the arbiter did not answer
  const RECONNECT_MS = 1000;
  const MAX_ERRORS_SHOWN = 5;
  const LOGIN_KEY = 'hand-mqtt.login'; // sessionStorage: this tab only, gone when it closes
  const HAND_NAME = /^[A-Za-z0-9_-]{1,64}$/;
  const BRIDGE = 'bridge';

  const $ = (id) => document.getElementById(id);
  const title = (name) => name.charAt(0).toUpperCase() + name.slice(1);
  const decoder = new TextDecoder();

  // What each finger's buttons send to <base>/<hand>/<finger>/set. A new per-finger action
  // (Relax) is one more entry here.
  const FINGER_ACTIONS = [
    { key: 'contract', text: 'Contract', name: (f) => `Contract ${f}`, body: () => ({ angle: MIN_ANGLE }) },
    { key: 'subtract', text: `\u2212${NUDGE}`, name: (f) => `${title(f)} \u2212${NUDGE}`, body: () => ({ delta: -NUDGE }) },
    { key: 'add', text: `+${NUDGE}`, name: (f) => `${title(f)} +${NUDGE}`, body: () => ({ delta: NUDGE }) },
    { key: 'extend', text: 'Extend', name: (f) => `Extend ${f}`, body: () => ({ angle: MAX_ANGLE }) },
  ];
  // Whole-hand actions for <base>/<hand>/set, in the bar that stays on screen. ``shown`` says
  // when the button is there at all; they are never locked out (the arbiter takes relax and lock
  // commands during an emergency stop).
  const HAND_ACTIONS = [
    {
      key: 'stop', text: 'Stop', body: () => ({ lock: true }), what: 'emergency stop',
      title: 'Emergency stop: every finger goes limp and every motion is refused until unlocked',
      shown: () => true,
    },
    {
      key: 'relax', text: 'Relax', body: () => ({ relax: true }), what: 'relax every finger',
      title: 'Relax every finger (the servos go limp) until a command moves them',
      shown: () => true,
    },
    {
      key: 'unlock', text: 'Unlock', body: () => ({ lock: false }), what: 'unlock',
      title: 'End the emergency stop (the fingers stay relaxed until a command moves them)',
      shown: () => locked(),
    },
  ];

  const page = {
    base: 'hand',
    hand: 'hand1',
    brokerUrl: '',
    current: 0, // which of them is in use
    brokers: [], // the brokers to try, in turn: the one in use, then the next when it goes
    attempts: 0,
    client: null,
    socket: null, // the websocket MQTT.js is using
    clientId: '',
    connected: false,
    refused: '', // why the broker refused the connection, while it stands
    canCommand: null, // null until the rights probe of this connection is answered
    probe: { token: '', echoed: false, count: 0 },
    bridge: null, // <base>/bridge/state
    availability: null, // <base>/<hand>/availability
    reported: null, // <base>/<hand>/reported, parsed
    states: new Map(), // hand -> desired state, from <base>/+/state
    poses: null, // name -> five angles, from <base>/bridge/poses
    gestures: null, // name -> length of one round in ms, from <base>/bridge/gestures
    errors: [],
    message: { text: '', tone: 'info' },
    tx: { prefix: '', count: 0, pending: new Map() },
  };
  // Per finger: is the user dragging its slider, and the last slider command not yet answered.
  const held = Object.fromEntries(FINGERS.map((f) => [f, { dragging: false, tx: null }]));
  const stream = { values: new Map(), timer: null };
  const controls = []; // every element that sends a command that moves a finger
  const handButtons = []; // [action, button] of HAND_ACTIONS

  // -- helpers ----------------------------------------------------------------------------

  function make(tag, attributes = {}, text = '') {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
    if (text) element.textContent = text;
    return element;
  }

  function randomHex(bytes) {
    const data = new Uint8Array(bytes);
    crypto.getRandomValues(data);
    return Array.from(data, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  function parseJson(text) {
    try {
      return JSON.parse(text);
    } catch (_) {
      return undefined;
    }
  }

  function isAngle(value) {
    return Number.isInteger(value) && value >= MIN_ANGLE && value <= MAX_ANGLE;
  }

  function topic(...parts) {
    return [page.base, ...parts].join('/');
  }

  function handTopic(...parts) {
    return topic(page.hand, ...parts);
  }

  function ourSequence(transaction) {
    if (typeof transaction !== 'string' || !transaction.startsWith(page.tx.prefix + '-')) return null;
    const n = Number(transaction.slice(page.tx.prefix.length + 1));
    return Number.isInteger(n) ? n : null;
  }

  // -- sign-in (sessionStorage: this tab only) ----------------------------------------------

  function savedLogin() {
    const saved = parseJson(sessionStorage.getItem(LOGIN_KEY) || '');
    if (saved && typeof saved.username === 'string' && typeof saved.password === 'string') return saved;
    return null;
  }

  function showLogin(reason) {
    $('login').hidden = false;
    $('sign-in').hidden = true;
    $('login-reason').textContent = reason;
    const saved = savedLogin();
    if (saved && !$('login-user').value) $('login-user').value = saved.username;
    $('login-user').focus();
  }

  function onLogin(event) {
    event.preventDefault();
    const username = $('login-user').value.trim();
    const password = $('login-password').value;
    $('login-password').value = '';
    if (!username) {
      showLogin('Give a user name.');
      return;
    }
    sessionStorage.setItem(LOGIN_KEY, JSON.stringify({ username, password }));
    $('login').hidden = true;
    connect();
  }

  function signOut() {
    sessionStorage.removeItem(LOGIN_KEY);
    $('login').hidden = true;
    connect();
  }

  // -- the connection -------------------------------------------------------------------------

  function brokerUrl(configured) {
    const url = new URL(configured, location.href);
    if (url.hostname === '0.0.0.0' || url.hostname === '[::]') url.hostname = location.hostname;
    return url.href;
  }

  // Ends the connection at once. MQTT.js closes its websocket a tick later, which never comes
  // when the page is being put away (pagehide): then the broker would keep a connection to a
  // frozen page until its keep-alive ran out, so the socket is closed here too.
  function disconnect() {
    if (page.client) page.client.end(true);
    if (page.socket) page.socket.close();
    page.client = null;
    page.socket = null;
    page.connected = false;
  }

  function connect() {
    disconnect();
    const login = savedLogin();
    page.clientId = `hand-web-${randomHex(6)}`;
    page.refused = '';
    page.connected = false;
    page.canCommand = null;
    const options = {
      protocolVersion: 4, // MQTT 3.1.1: the embedded broker speaks nothing newer
      clientId: page.clientId,
      clean: true,
      keepalive: 30,
      reconnectPeriod: RECONNECT_MS,
      connectTimeout: 5000,
      resubscribe: false, // subscribe() below runs on every connection
      // Every new socket after the first follows a broker that went away or did not answer:
      // with a list of brokers, it goes to the next one, as every hand-mqtt client does.
      createWebsocket: (url, protocols) => {
        if (page.attempts > 0 && page.brokers.length > 1) {
          page.current = (page.current + 1) % page.brokers.length;
        }
        page.attempts += 1;
        const target = page.brokers.length > 1 ? page.brokers[page.current] : url;
        page.socket = new WebSocket(target, protocols);
        return page.socket;
      },
    };
    if (login) {
      options.username = login.username;
      options.password = login.password;
    }
    page.attempts = 0;
    const client = mqtt.connect(page.brokers[page.current] || page.brokerUrl, options);
    page.client = client;
    client.on('connect', () => onConnect(client));
    client.on('message', (name, payload, packet) => onMessage(name, payload, packet));
    client.on('close', () => onClose(client));
    client.on('reconnect', () => render());
    client.on('error', (error) => onError(client, error));
    render();
  }

  function commonFilters() {
    return [topic(BRIDGE, 'state'), topic(BRIDGE, 'poses'), topic(BRIDGE, 'gestures'), topic(BRIDGE, 'set'),
      topic(BRIDGE, 'sync', page.clientId), topic('+', 'state')];
  }

  function handFilters() {
    return [handTopic('reported'), handTopic('availability'), handTopic('error')];
  }

  function onConnect(client) {
    if (client !== page.client) return;
    page.connected = true;
    page.refused = '';
    page.canCommand = null;
    client.subscribe([...commonFilters(), ...handFilters()], { qos: 1 }, (error, granted) => {
      if (error || client !== page.client) return;
      const refused = (granted || []).filter((g) => g.qos === 128).map((g) => g.topic);
      if (refused.length) say(`The broker does not let this account read ${refused.join(', ')}.`, 'error');
      checkRights(client);
    });
    render();
  }

  // The rights probe: see the comment at the top.
  function checkRights(client) {
    page.probe.count += 1;
    page.probe.token = `${page.clientId} ${page.probe.count}`;
    page.probe.echoed = false;
    client.publish(topic(BRIDGE, 'set'), page.probe.token, { qos: 1 });
    client.publish(topic(BRIDGE, 'sync', page.clientId), page.probe.token, { qos: 1 });
  }

  function onClose(client) {
    if (client !== page.client) return;
    page.connected = false;
    page.canCommand = null;
    page.bridge = null;
    page.availability = null;
    render();
  }

  function onError(client, error) {
    if (client !== page.client) return;
    const code = error && error.code;
    if (code === 4 || code === 5) {
      const login = savedLogin();
      client.end(true);
      if (login) {
        sessionStorage.setItem(LOGIN_KEY, JSON.stringify({ username: login.username, password: '' }));
        page.refused = `The broker refused ${login.username}: wrong user name or password, or no right to connect.`;
      } else {
        page.refused = 'This broker needs a user name and password.';
      }
      showLogin(page.refused);
    }
    render();
  }

  // -- what arrives ---------------------------------------------------------------------------

  function onMessage(name, payload) {
    const text = decoder.decode(payload);
    if (name === topic(BRIDGE, 'set')) {
      if (text === page.probe.token) page.probe.echoed = true;
      return;
    }
    if (name === topic(BRIDGE, 'sync', page.clientId)) {
      if (text === page.probe.token) {
        page.canCommand = page.probe.echoed;
        render();
      }
      return;
    }
    if (name === topic(BRIDGE, 'state')) {
      page.bridge = text || null;
    } else if (name === topic(BRIDGE, 'poses')) {
      page.poses = readPoses(text);
      renderPoses();
    } else if (name === topic(BRIDGE, 'gestures')) {
      page.gestures = readGestures(text);
      renderGestures();
    } else if (name === handTopic('reported')) {
      const reported = parseJson(text);
      page.reported = reported && typeof reported === 'object' ? reported : null;
    } else if (name === handTopic('availability')) {
      page.availability = text || null;
    } else if (name === handTopic('error')) {
      onArbiterError(parseJson(text));
    } else {
      const parts = name.split('/');
      const hand = parts[parts.length - 2];
      if (name === topic(hand, 'state') && hand !== BRIDGE) onState(hand, text);
      else return;
    }
    render();
  }

  function readPoses(text) {
    const data = parseJson(text);
    if (!data || typeof data !== 'object' || Array.isArray(data)) return null;
    const poses = new Map();
    for (const [name, angles] of Object.entries(data)) {
      if (Array.isArray(angles) && angles.length === FINGERS.length && angles.every(isAngle)) {
        poses.set(name, angles);
      }
    }
    return poses;
  }

  function readGestures(text) {
    const data = parseJson(text);
    if (!data || typeof data !== 'object' || Array.isArray(data)) return null;
    const gestures = new Map();
    for (const [name, gesture] of Object.entries(data)) {
      if (gesture && typeof gesture === 'object' && Array.isArray(gesture.steps)) {
        gestures.set(name, Number.isFinite(gesture.duration_ms) ? gesture.duration_ms : null);
      }
    }
    return gestures;
  }

  function onState(hand, text) {
    const state = text ? parseJson(text) : null;
    if (!state || typeof state !== 'object' || !FINGERS.every((f) => isAngle(state[f]))) {
      page.states.delete(hand);
      return;
    }
    page.states.set(hand, state);
    if (hand === page.hand) answered(state.transaction, null);
  }

  function onArbiterError(report) {
    if (!report || typeof report.error !== 'string') return;
    const entry = {
      error: report.error.slice(0, 300),
      topic: String(report.topic || '').slice(0, 200),
      payload: String(report.payload || '').slice(0, 200),
      at: new Date(),
      ours: ourSequence(report.transaction) !== null,
    };
    page.errors.unshift(entry);
    page.errors.length = Math.min(page.errors.length, MAX_ERRORS_SHOWN);
    answered(report.transaction, entry.error);
  }

  // -- commands -------------------------------------------------------------------------------

  function mayCommand() {
    return page.connected && page.canCommand === true && page.bridge === 'online';
  }

  // The emergency stop is on: the arbiter refuses every motion until it is unlocked.
  function locked() {
    const desired = page.states.get(page.hand);
    return Boolean(page.connected && desired && desired.locked === true);
  }

  // Publish one command with a transaction of ours; returns the transaction, or null. ``done``
  // is what to say once the arbiter has accepted it.
  function send(name, body, description, quiet = false, done = `Done: ${description}`) {
    if (!mayCommand()) {
      say(`Not sent: ${whyNoCommands()}`, 'error');
      return null;
    }
    page.tx.count += 1;
    const transaction = `${page.tx.prefix}-${page.tx.count}`;
    page.client.publish(name, JSON.stringify({ ...body, transaction }), { qos: 1, retain: false });
    page.tx.pending.set(transaction, { description, sentAt: Date.now(), quiet, done });
    if (!quiet) say(`Sent: ${description}`, 'info');
    return transaction;
  }

  // The arbiter answered our transaction (a state carrying it, or an error): every earlier
  // command of ours has been applied or refused too, since it serves commands in order.
  function answered(transaction, error) {
    const n = ourSequence(transaction);
    if (n === null) return;
    const command = page.tx.pending.get(transaction);
    for (const key of [...page.tx.pending.keys()]) {
      if (ourSequence(key) <= n) page.tx.pending.delete(key);
    }
    if (command) {
      if (error !== null) say(`The arbiter rejected ${command.description}: ${error}`, 'error');
      else if (!command.quiet) say(command.done, 'ok');
    }
    for (const finger of FINGERS) {
      const tx = held[finger].tx;
      if (tx !== null && !page.tx.pending.has(tx)) held[finger].tx = null;
    }
  }

  function watchAnswers() {
    const now = Date.now();
    let late = null;
    for (const [transaction, command] of page.tx.pending) {
      if (now - command.sentAt > ANSWER_TIMEOUT_MS) {
        page.tx.pending.delete(transaction);
        late = command;
      }
    }
    for (const finger of FINGERS) {
      if (held[finger].tx !== null && !page.tx.pending.has(held[finger].tx)) held[finger].tx = null;
    }
    if (late) {
      say(`No answer from the arbiter to ${late.description} within ${ANSWER_TIMEOUT_MS / 1000} s.`, 'error');
      render();
    }
  }

  function fingerCommand(finger, action) {
    const body = action.body();
    const what = 'angle' in body ? `${finger} to ${body.angle}` : `${finger} by ${body.delta > 0 ? '+' : ''}${body.delta}`;
    send(handTopic(finger, 'set'), body, what);
  }

  function poseCommand(name) {
    send(handTopic('set'), { pose: name }, `pose ${name}`);
  }

  function gestureCommand(name) {
    send(handTopic('set'), { gesture: name }, `gesture ${name}`, false, `Playing gesture ${name}`);
  }

  // Slider drags: the first value goes at once, then at most one command per interval with
  // the latest values, so the stream is bounded and the final value is always sent.
  function sliderInput(finger, value) {
    stream.values.set(finger, value);
    if (stream.timer === null) flushSliders();
  }

  function flushSliders() {
    if (stream.values.size === 0 || !mayCommand()) {
      stream.values.clear();
      stream.timer = null;
      return;
    }
    const body = Object.fromEntries(stream.values);
    stream.values.clear();
    const description = Object.entries(body).map(([f, a]) => `${f} to ${a}`).join(', ');
    const transaction = send(handTopic('set'), body, description, true);
    for (const finger of Object.keys(body)) held[finger].tx = transaction;
    stream.timer = setTimeout(flushSliders, SLIDER_INTERVAL_MS);
  }

  function readCustomBoxes() {
    const angles = [];
    const bad = [];
    for (const finger of FINGERS) {
      const box = $(`custom-${finger}`);
      const text = box.value.trim();
      let valid = true;
      if (text === '') {
        angles.push(null);
      } else if (/^[0-9]+$/.test(text) && Number(text) <= MAX_ANGLE) {
        angles.push(Number(text));
      } else {
        angles.push(null);
        valid = false;
        bad.push(finger);
      }
      box.setAttribute('aria-invalid', valid ? 'false' : 'true');
    }
    return { angles, bad };
  }

  function onCustom(event) {
    event.preventDefault();
    const { angles, bad } = readCustomBoxes();
    const line = $('custom-message');
    line.dataset.tone = 'error';
    if (bad.length) {
      const names = bad.map(title);
      const list = names.length === 1 ? names[0] : `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;
      const verb = names.length === 1 ? 'must be' : 'must each be';
      line.textContent = `Not sent: ${list} ${verb} a whole number from 0 to 180 (or empty, to keep the finger).`;
      $(`custom-${bad[0]}`).focus();
      return;
    }
    if (angles.every((a) => a === null)) {
      line.textContent = 'Nothing sent: every box is empty.';
      return;
    }
    const description = 'angles ' + angles.map((a) => (a === null ? '\u2013' : a)).join(' ');
    if (send(handTopic('set'), { angles }, description) !== null) {
      line.dataset.tone = 'ok';
      line.textContent = `Sent: ${description}`;
    } else {
      line.textContent = `Not sent: ${whyNoCommands()}`;
    }
  }

  function switchHand(hand) {
    if (!HAND_NAME.test(hand) || hand === BRIDGE || hand === page.hand) return;
    const client = page.client;
    if (page.connected && client) client.unsubscribe(handFilters());
    page.hand = hand;
    page.reported = null;
    page.availability = null;
    page.errors = [];
    stream.values.clear();
    for (const finger of FINGERS) held[finger].tx = null;
    const query = new URLSearchParams(location.search);
    query.set('hand', hand);
    history.replaceState(null, '', `?${query}`);
    if (page.connected && client) client.subscribe(handFilters(), { qos: 1 });
    say(`Showing hand ${hand}.`, 'info');
    render();
  }

  // -- drawing --------------------------------------------------------------------------------

  function say(text, tone) {
    page.message = { text, tone };
    const line = $('message');
    line.textContent = text;
    line.dataset.tone = tone;
  }

  function whyNoCommands() {
    if (!page.connected) return 'not connected to the broker.';
    if (page.canCommand === false) return 'the broker does not let this account send commands.';
    if (page.canCommand === null) return 'still checking what this account may do.';
    if (page.bridge !== 'online') return 'the arbiter is offline.';
    return '';
  }

  function buildFingers() {
    const list = $('finger-list');
    for (const finger of FINGERS) {
      const card = make('div', { class: 'finger', id: `finger-${finger}` });
      const head = make('div', { class: 'finger-head' });
      const name = make('div', { class: 'finger-title' });
      name.append(make('label', { for: `slider-${finger}`, class: 'finger-name' }, title(finger)),
        make('span', { class: 'badge', id: `relaxed-${finger}`, hidden: '' }, 'relaxed'));
      head.append(name);
      const values = make('p', { class: 'values', id: `values-${finger}` });
      values.append(make('span', { class: 'value-label' }, 'desired '),
        make('b', { id: `desired-${finger}`, class: 'desired' }, '\u2013'),
        make('span', { class: 'value-label' }, ' reported '),
        make('b', { id: `reported-${finger}`, class: 'reported' }, '\u2013'));
      head.append(values);

      const track = make('div', { class: 'track' });
      const slider = make('input', {
        type: 'range', id: `slider-${finger}`, min: String(MIN_ANGLE), max: String(MAX_ANGLE),
        step: '1', value: String(MAX_ANGLE), 'aria-describedby': `values-${finger}`,
      });
      slider.addEventListener('input', () => sliderInput(finger, slider.valueAsNumber));
      slider.addEventListener('pointerdown', () => { held[finger].dragging = true; });
      const marker = make('div', { class: 'reported-marker', id: `marker-${finger}`, 'aria-hidden': 'true' });
      track.append(slider, marker);
      controls.push(slider);

      const actions = make('div', { class: 'finger-actions' });
      for (const action of FINGER_ACTIONS) {
        const button = make('button', {
          type: 'button', class: `action ${action.key}`, 'aria-label': action.name(finger),
          'data-finger': finger, 'data-action': action.key,
        }, action.text);
        button.addEventListener('click', () => fingerCommand(finger, action));
        actions.append(button);
        controls.push(button);
      }
      card.append(head, track, actions);
      list.append(card);
    }
    window.addEventListener('pointerup', releaseSliders);
    window.addEventListener('pointercancel', releaseSliders);
  }

  function releaseSliders() {
    for (const finger of FINGERS) held[finger].dragging = false;
    render();
  }

  function buildHandActions() {
    const bar = $('hand-actions');
    for (const action of HAND_ACTIONS) {
      const button = make('button', { type: 'button', class: `hand-action ${action.key}`, title: action.title }, action.text);
      button.addEventListener('click', () => send(handTopic('set'), action.body(), action.what));
      bar.append(button);
      handButtons.push([action, button]);
    }
    bar.hidden = HAND_ACTIONS.length === 0;
  }

  function buildCustom() {
    const boxes = $('custom-boxes');
    for (const finger of FINGERS) {
      const cell = make('div', { class: 'custom-box' });
      const input = make('input', {
        id: `custom-${finger}`, inputmode: 'numeric', autocomplete: 'off', maxlength: '8',
        'aria-label': `${title(finger)} custom angle`, 'aria-invalid': 'false',
        'aria-describedby': 'custom-message',
      });
      input.addEventListener('input', () => input.setAttribute('aria-invalid', 'false'));
      cell.append(make('label', { for: `custom-${finger}` }, title(finger)), input);
      boxes.append(cell);
      controls.push(input);
    }
    controls.push($('custom-submit'));
  }

  function renderPoses() {
    const list = $('pose-list');
    list.replaceChildren();
    if (!page.poses || page.poses.size === 0) {
      list.append(make('p', { class: 'muted' }, 'Waiting for the arbiter\u2019s poses\u2026'));
      return;
    }
    for (const [name, angles] of page.poses) {
      const button = make('button', { type: 'button', class: 'pose', 'data-pose': name, title: angles.join(' ') }, name);
      button.addEventListener('click', () => poseCommand(name));
      list.append(button);
    }
    render();
  }

  function renderGestures() {
    const list = $('gesture-list');
    list.replaceChildren();
    const gestures = page.gestures || new Map();
    for (const [name, duration] of gestures) {
      const button = make('button', {
        type: 'button', class: 'gesture', 'data-gesture': name, 'aria-label': `Play ${name}`,
        title: duration === null ? name : `${name}: ${(duration / 1000).toFixed(1)} s`,
      }, name);
      button.addEventListener('click', () => gestureCommand(name));
      list.append(button);
    }
    $('gestures').hidden = gestures.size === 0;
    render();
  }

  function setStatus(key, text, tone) {
    $(`status-${key}-text`).textContent = text;
    $(`status-${key}`).dataset.tone = tone;
  }

  function renderStatus() {
    const client = page.client;
    if (page.connected) setStatus('broker', 'connected', 'ok');
    else if (page.refused) setStatus('broker', 'refused', 'error');
    else if (client && client.reconnecting) setStatus('broker', 'reconnecting\u2026', 'error');
    else setStatus('broker', 'connecting\u2026', 'unknown');

    const known = (value) => page.connected && value !== null;
    setStatus('arbiter', known(page.bridge) ? page.bridge : 'unknown',
      !known(page.bridge) ? 'unknown' : page.bridge === 'online' ? 'ok' : 'error');
    setStatus('device', known(page.availability) ? page.availability : 'unknown',
      !known(page.availability) ? 'unknown' : page.availability === 'online' ? 'ok' : 'error');

    const reported = page.reported;
    if (page.connected && page.availability === 'online' && reported) {
      if (reported.failsafe) setStatus('link', `${reported.link}, failsafe`, 'warn');
      else setStatus('link', reported.link === 'up' ? 'up' : 'down', reported.link === 'up' ? 'ok' : 'error');
    } else {
      setStatus('link', 'unknown', 'unknown');
    }
    const firmware = reported && reported.firmware;
    $('firmware').textContent = firmware && page.connected
      ? `Firmware ${String(firmware.name)} ${String(firmware.version)}, protocol ${String(firmware.protocol)}` +
        (reported.serial ? ` on ${String(reported.serial)}` : '')
      : '';
  }

  function renderAccount() {
    const login = savedLogin();
    const signedIn = Boolean(login && login.password);
    $('account-text').textContent = signedIn ? `Signed in as ${login.username}` : 'Not signed in';
    $('sign-in').hidden = signedIn || !$('login').hidden;
    $('sign-out').hidden = !signedIn;
    const notice = $('readonly');
    let text = '';
    if (page.connected && page.canCommand === false) {
      const who = signedIn ? login.username : 'a client without a user name';
      text = `Read-only: the broker does not let ${who} send commands. You can watch the hand; ` +
        'sign in as an operator to move it.';
    } else if (page.connected && page.canCommand === true && page.bridge !== 'online') {
      text = 'The arbiter is offline: commands would not be applied, so the controls are off until it is back.';
    }
    notice.textContent = text;
    notice.hidden = !text;
  }

  function renderHands() {
    const hands = new Set([...page.states.keys()].filter((h) => h !== BRIDGE));
    hands.add(page.hand);
    const names = [...hands].sort();
    const select = $('hand-select');
    const current = [...select.options].map((o) => o.value).join('\n');
    if (current !== names.join('\n')) {
      select.replaceChildren(...names.map((name) => make('option', { value: name }, name)));
    }
    select.value = page.hand;
    $('hand-choice').hidden = names.length < 2;
    $('hand-title').textContent = page.hand;
    $('topic-root').textContent = `${page.base}/${page.hand}/\u2026`;
    document.title = `hand-mqtt \u00b7 ${page.hand}`;
  }

  function renderFingers() {
    const desired = page.states.get(page.hand) || null;
    const reported = page.connected && page.availability === 'online' ? page.reported : null;
    for (const finger of FINGERS) {
      const want = desired ? desired[finger] : null;
      const got = reported && isAngle(reported[finger]) ? reported[finger] : null;
      $(`desired-${finger}`).textContent = want === null ? '\u2013' : `${want}\u00b0`;
      $(`reported-${finger}`).textContent = got === null ? '\u2013' : `${got}\u00b0`;
      const slider = $(`slider-${finger}`);
      const hold = held[finger];
      if (want !== null && !hold.dragging && hold.tx === null && !stream.values.has(finger)) {
        slider.value = String(want);
      }
      slider.setAttribute('aria-valuetext', want === null ? 'unknown' : `${slider.value} degrees`);
      const relaxed = Boolean(desired && Array.isArray(desired.relaxed) && desired.relaxed.includes(finger));
      $(`relaxed-${finger}`).hidden = !relaxed;
      $(`finger-${finger}`).dataset.relaxed = String(relaxed);
      const marker = $(`marker-${finger}`);
      marker.hidden = got === null;
      if (got !== null) marker.style.setProperty('--at', String(got / MAX_ANGLE));
    }
    const bits = [];
    if (desired) {
      bits.push(`Pose: ${desired.pose || '\u2014'}`, `version ${desired.version}`);
      const gesture = desired.gesture;
      if (gesture && typeof gesture === 'object') {
        const round = gesture.rounds > 1 ? ` round ${gesture.round}/${gesture.rounds}` : '';
        bits.push(`playing ${String(gesture.name)}, step ${gesture.step}/${gesture.steps}${round}`);
      }
      if (reported && reported.version === desired.version) bits.push('the hand has caught up');
      else if (reported) bits.push('the hand is catching up');
      if (reported && reported.moving) bits.push('moving');
    } else if (page.connected) {
      bits.push(`No desired state for ${page.hand} yet (is the arbiter serving it?)`);
    }
    $('pose-line').textContent = bits.join(' \u00b7 ');
    for (const button of document.querySelectorAll('#pose-list .pose')) {
      const current = desired && desired.pose === button.dataset.pose;
      if (current) button.setAttribute('aria-current', 'true');
      else button.removeAttribute('aria-current');
    }
  }

  function renderErrors() {
    const list = $('errors');
    list.replaceChildren(...page.errors.map((entry) => {
      const item = make('li', { class: entry.ours ? 'error ours' : 'error' });
      item.append(make('time', { datetime: entry.at.toISOString() }, entry.at.toLocaleTimeString()),
        make('span', { class: 'sentence' }, entry.error),
        make('span', { class: 'detail' }, `${entry.topic}: ${entry.payload}`));
      return item;
    }));
    $('no-errors').hidden = page.errors.length > 0;
  }

  function render() {
    const allowed = mayCommand();
    document.body.dataset.mode = !page.connected ? 'offline' : page.canCommand === false ? 'readonly' : allowed ? 'control' : 'waiting';
    const stopped = locked();
    const buttons = document.querySelectorAll('#pose-list .pose, #gesture-list .gesture');
    for (const element of [...controls, ...buttons]) {
      element.disabled = !allowed || stopped;
    }
    for (const [action, button] of handButtons) {
      button.hidden = !action.shown();
      button.disabled = !allowed;
    }
    $('locked').hidden = !stopped;
    document.body.dataset.locked = String(stopped);
    renderStatus();
    renderAccount();
    renderHands();
    renderFingers();
    renderErrors();
  }

  // -- start ----------------------------------------------------------------------------------

  async function start() {
    page.tx.prefix = `web-${randomHex(4)}`;
    buildHandActions();
    buildFingers();
    buildCustom();
    $('login').addEventListener('submit', onLogin);
    $('login-cancel').addEventListener('click', () => { $('login').hidden = true; render(); });
    $('sign-in').addEventListener('click', () => showLogin('Sign in with your account on the broker.'));
    $('sign-out').addEventListener('click', signOut);
    $('custom').addEventListener('submit', onCustom);
    $('hand-select').addEventListener('change', (event) => switchHand(event.target.value));
    window.addEventListener('pagehide', disconnect);
    // Back from the browser's back-forward cache: connect again.
    window.addEventListener('pageshow', (event) => { if (event.persisted) connect(); });
    setInterval(watchAnswers, 1000);

    let config;
    try {
      const answer = await fetch('config.json', { cache: 'no-store' });
      config = await answer.json();
    } catch (error) {
      say(`Cannot read the page's settings (config.json): ${error}`, 'error');
      return;
    }
    page.base = String(config.base || 'hand');
    const wanted = new URLSearchParams(location.search).get('hand');
    page.hand = wanted && HAND_NAME.test(wanted) && wanted !== BRIDGE ? wanted : String(config.hand || 'hand1');
    page.brokers = String(config.broker).split(',').map((entry) => brokerUrl(entry.trim()));
    page.current = 0;
    page.brokerUrl = page.brokers[0];
    $('broker-url').textContent = page.brokerUrl;
    $('mqttjs-version').textContent = String(config.mqttjs || '');
    if (typeof mqtt === 'undefined') {
      say('The MQTT library did not load (vendor/mqtt.min.js).', 'error');
      return;
    }
    render();
    connect();
  }

  start();
})();
