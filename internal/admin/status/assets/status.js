// The status page's live updates and bot settings (package status).
//
// Live updates: every data-refresh seconds the page is fetched again and
// each element marked data-live is replaced by its namesake (same id) in the
// new page; the children of a data-live-list are matched by id, added and
// removed. Nothing else is touched, so an open <details>, the scroll
// position and a form being edited stay as they are: a settings card that
// has focus or unsaved changes is left alone until it is saved.
//
// Settings: Save sends the fields that changed to PUT
// /v1/bots/{botId}/presence (a blank field clears the bot's own value) and
// shows the API's error beside the field it names.
(function () {
  'use strict';

  var meta = document.getElementById('meta');
  var period = meta ? Number(meta.getAttribute('data-refresh')) : 0;
  var paused = false;
  var timer = null;
  var inflight = null; // the update under way

  // A card is busy while it has focus or unsaved changes.
  function busy(el) {
    return el.hasAttribute('data-dirty') || el.contains(document.activeElement);
  }

  function patch(doc) {
    document.querySelectorAll('[data-live]').forEach(function (el) {
      if (!el.id || el.closest('[data-live-list]') || busy(el)) return;
      var fresh = doc.getElementById(el.id);
      if (fresh) el.replaceWith(document.importNode(fresh, true));
    });
    document.querySelectorAll('[data-live-list]').forEach(function (list) {
      var fresh = doc.getElementById(list.id);
      if (!fresh) return;
      var keep = {};
      Array.prototype.forEach.call(fresh.children, function (child) {
        keep[child.id] = true;
        var cur = child.id && document.getElementById(child.id);
        if (!cur) list.appendChild(document.importNode(child, true));
        else if (!busy(cur)) cur.replaceWith(document.importNode(child, true));
      });
      Array.prototype.slice.call(list.children).forEach(function (child) {
        if (!keep[child.id] && !busy(child)) child.remove();
      });
    });
    document.title = doc.title;
  }

  // update fetches the page and patches it; called while one is under way,
  // it runs once more after it (that one may predate a change just saved).
  function update() {
    if (inflight) return inflight.then(update);
    inflight = fetch(location.href, { headers: { Accept: 'text/html' }, cache: 'no-store' })
      .then(function (r) {
        if (!r.ok) throw new Error('HTTP ' + r.status);
        return r.text();
      })
      .then(function (html) {
        patch(new DOMParser().parseFromString(html, 'text/html'));
        setState(paused ? 'paused' : 'updates every ' + period + ' s');
      })
      .catch(function (e) { setState('update failed (' + e.message + '), retrying'); })
      .finally(function () { inflight = null; });
    return inflight;
  }

  function setState(text) {
    var s = document.getElementById('live-state');
    if (s) s.textContent = text;
  }

  function schedule() {
    clearInterval(timer);
    if (period > 0 && !paused) timer = setInterval(function () { if (!inflight) update(); }, period * 1000);
  }

  var toggle = document.getElementById('live-toggle');
  if (toggle) {
    toggle.addEventListener('click', function (ev) {
      ev.preventDefault();
      paused = !paused;
      toggle.textContent = paused ? 'resume' : 'stop';
      setState(paused ? 'paused' : 'updates every ' + period + ' s');
      schedule();
    });
  }
  schedule();

  // ------------------------------------------------------------ settings

  var tokenKey = 'presence-sidecar.admin-token';

  function changes(form) {
    var body = {};
    var f = form.elements;
    if (f.enabled.checked !== f.enabled.defaultChecked) body.enabled = f.enabled.checked;
    if (f.checkInterval.value !== f.checkInterval.defaultValue) {
      var v = f.checkInterval.value.trim();
      body.checkInterval = v === '' ? '' : v + 'm';
    }
    var sel = f.mode.options[f.mode.selectedIndex];
    if (sel && !sel.defaultSelected) body.mode = f.mode.value;
    if (f.returnMessage.value !== f.returnMessage.defaultValue) body.returnMessage = f.returnMessage.value;
    return body;
  }

  function clearErrors(form) {
    form.querySelectorAll('.field-error, .form-error, .saved').forEach(function (e) { e.textContent = ''; });
  }

  // The API names the field first, after the bot ('bot "b": checkInterval
  // "11m0s": want 1m0s to 10m0s ...'); the message goes beside that field,
  // or under the form.
  function showError(form, msg) {
    var m = /^(?:bot "(?:[^"\\]|\\.)*": )?(?:unknown field ")?(enabled|checkInterval|returnMessage|mode)\b/.exec(msg);
    var slot = m && form.querySelector('[data-error-for="' + m[1] + '"]');
    (slot || form.querySelector('.form-error')).textContent = msg;
  }

  function save(form, token) {
    var body = changes(form);
    clearErrors(form);
    if (Object.keys(body).length === 0) {
      form.querySelector('.saved').textContent = 'Nothing changed';
      form.removeAttribute('data-dirty');
      return;
    }
    var headers = { 'Content-Type': 'application/json' };
    if (token) headers.Authorization = 'Bearer ' + token;
    var bot = form.getAttribute('data-bot');
    fetch('/v1/bots/' + encodeURIComponent(bot) + '/presence', {
      method: 'PUT', headers: headers, body: JSON.stringify(body), cache: 'no-store'
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (j) { return { status: r.status, body: j }; });
    }).then(function (res) {
      if (res.status === 401) {
        var t = window.prompt('The settings API needs ADMIN_TOKEN. Token:');
        if (t) {
          sessionStorage.setItem(tokenKey, t);
          save(form, t);
        } else {
          showError(form, res.body.error || 'not authorized');
        }
        return;
      }
      if (res.status !== 200) {
        showError(form, res.body.error || 'HTTP ' + res.status);
        return;
      }
      form.removeAttribute('data-dirty');
      form.querySelector('.saved').textContent = 'Saved';
      if (document.activeElement && form.contains(document.activeElement)) document.activeElement.blur();
      // The card again, from the server: the values now in force.
      var id = form.id;
      update().then(function () {
        var card = document.getElementById(id);
        if (card) card.querySelector('.saved').textContent = 'Saved';
      });
    }).catch(function (e) { showError(form, 'could not reach the sidecar: ' + e.message); });
  }

  document.addEventListener('input', function (ev) {
    var form = ev.target.closest && ev.target.closest('form.bot');
    if (form) form.setAttribute('data-dirty', '');
  });
  document.addEventListener('change', function (ev) {
    var form = ev.target.closest && ev.target.closest('form.bot');
    if (form) form.setAttribute('data-dirty', '');
  });
  document.addEventListener('submit', function (ev) {
    var form = ev.target.closest && ev.target.closest('form.bot');
    if (!form) return;
    ev.preventDefault();
    save(form, sessionStorage.getItem(tokenKey));
  });
})();
