// Live list of the notifications the console received (Server-Sent Events).
(function () {
  'use strict';
  var list = document.getElementById('events');
  var stream = document.getElementById('stream');
  var count = 0;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function add(n) {
    var online = n.event === 'client.online';
    var box = el('div', 'event' + (online ? ' online' : '') + (n.refused ? ' bad' : ''));
    box.dataset.event = n.event;
    box.dataset.session = n.sessionId;
    var title = online ? 'Client back online' : (n.offline ? 'Client offline' : n.event || n.path);
    box.appendChild(el('h3', '', title + ' — session ' + n.sessionId));
    var facts = [
      new Date(n.at).toLocaleTimeString(),
      'POST ' + n.path + (n.query ? '?' + n.query : ''),
      'bot ' + (n.botId || '—'),
      n.reason ? 'reason ' + n.reason : '',
      n.refused ? 'REFUSED: ' + n.refused : (n.signed ? (n.verified ? 'signature verified' : 'signed (not checked)') : 'unsigned'),
      n.duplicate ? 'duplicate delivery of ' + n.webhookId : 'id ' + n.webhookId
    ].filter(Boolean);
    box.appendChild(el('div', 'meta', facts.join(' · ')));
    if (n.text) box.appendChild(el('p', 'text', '“' + n.text + '”'));
    box.appendChild(el('pre', '', typeof n.body === 'string' ? n.body : JSON.stringify(n.body, null, 2)));
    list.insertBefore(box, list.firstChild);
    count++;
    document.getElementById('count').textContent = count;
    document.getElementById('empty').style.display = 'none';
  }

  var es = new EventSource('events');
  es.onopen = function () { stream.textContent = 'live'; stream.className = 'badge on'; };
  es.onerror = function () { stream.textContent = 'reconnecting…'; stream.className = 'badge off'; };
  es.addEventListener('notification', function (ev) { add(JSON.parse(ev.data)); });
})();
