// The demo WebChat: the seed platform's client in a few lines. It opens the
// socket on the host that served this page (so, through the sidecar), links
// it to the session, sends keep_alive, posts user messages over HTTP and
// shows what the bot says over the socket. The transcript is kept per
// session in localStorage, so a reopened conversation shows where it stopped.
(function () {
  'use strict';
  var body = document.body;
  var params = new URLSearchParams(location.search);
  var botId = params.get('bot') || body.dataset.botId || 'demo-bot';
  var keepAliveMs = Number(params.get('keepAliveMs') || body.dataset.keepAliveMs) || 20000;

  // One session per tab: sessionStorage is per tab. ?session=ID picks one.
  function newId() {
    var b = new Uint8Array(6);
    crypto.getRandomValues(b);
    return 'web-' + Array.prototype.map.call(b, function (x) { return ('0' + x.toString(16)).slice(-2); }).join('');
  }
  var sessionId = params.get('session') || sessionStorage.getItem('demo.sessionId') || newId();
  sessionStorage.setItem('demo.sessionId', sessionId);

  var $ = function (id) { return document.getElementById(id); };
  $('session').textContent = sessionId;
  $('bot').textContent = botId;
  var reopen = new URL(location.href);
  reopen.search = '';
  reopen.searchParams.set('session', sessionId);
  if (params.get('bot')) reopen.searchParams.set('bot', botId);
  $('reopen').href = reopen.href;
  $('reopen').textContent = reopen.href;

  // State the browser tests read.
  var demo = window.demo = {
    sessionId: sessionId, botId: botId, socketId: '', state: 'connecting',
    linked: 0, keepAlives: 0, received: [], handedOver: false, closes: []
  };

  // The transcript, per session and bounded: the last maxKept lines.
  var maxKept = 200;
  var transcriptKey = 'demo.transcript.' + sessionId;
  var transcript = [];
  try { transcript = JSON.parse(localStorage.getItem(transcriptKey) || '[]'); } catch (e) { transcript = []; }
  if (!Array.isArray(transcript)) transcript = [];

  function append(kind, text, restored) {
    var li = document.createElement('li');
    li.className = kind + (restored ? ' restored' : '');
    li.textContent = text;
    $('messages').appendChild(li);
    li.scrollIntoView({ block: 'end' });
  }
  function show(kind, text) {
    append(kind, text, false);
    transcript.push({ kind: kind, text: text });
    if (transcript.length > maxKept) transcript = transcript.slice(-maxKept);
    try { localStorage.setItem(transcriptKey, JSON.stringify(transcript)); } catch (e) { /* full or off: the page still works */ }
  }
  transcript.forEach(function (m) { append(m.kind, m.text, true); });
  demo.restored = transcript.length;
  function setState(s, label) {
    demo.state = s;
    var el = $('status');
    el.dataset.state = s;
    el.textContent = label || s;
    el.className = 'badge ' + (s === 'linked' ? 'on' : 'off');
  }

  var ws = null, timer = null, retry = 500;
  function connect() {
    var url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
    setState('connecting', 'connecting…');
    ws = new WebSocket(url);
    ws.onopen = function () {
      retry = 500;
      ws.send(JSON.stringify({ action: 'link', data: { sessionId: sessionId, botId: botId } }));
      clearInterval(timer);
      timer = setInterval(function () {
        if (ws && ws.readyState === WebSocket.OPEN) {
          ws.send(JSON.stringify({ action: 'keep_alive' }));
          demo.keepAlives++;
        }
      }, keepAliveMs);
    };
    ws.onmessage = function (ev) {
      var m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      var data = m.data || {};
      demo.received.push(m);
      switch (m.action) {
        case 'link':
          demo.socketId = data.socketId || '';
          demo.linked++;
          setState('linked', 'linked (' + demo.socketId + ')');
          break;
        case 'message':
          show('bot', data.text || '');
          break;
        case 'end_conversation':
          if (data.isTransfer) {
            demo.handedOver = true;
            show('system', 'Conversa transferida para um atendente humano.');
          } else {
            demo.handedOver = false;
            show('system', 'Conversa encerrada.');
          }
          break;
      }
    };
    ws.onclose = function (ev) {
      demo.closes.push({ code: ev.code, reason: ev.reason, clean: ev.wasClean, at: Date.now() });
      clearInterval(timer);
      setState('closed', 'disconnected — reconnecting…');
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    };
  }

  $('form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    var text = $('input').value.trim();
    if (!text) return;
    $('input').value = '';
    show('user', text);
    fetch('webchat/message', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ sessionId: sessionId, botId: botId, text: text })
    }).then(function (r) {
      if (!r.ok) return r.text().then(function (t) { show('system', 'not sent: ' + t); });
    }).catch(function (e) { show('system', 'not sent: ' + e); });
  });

  connect();
})();
