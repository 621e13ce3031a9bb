// approvald's approvals page.  Everything works without this script (plain forms and links);
// with it: decisions are confirmed in a dialog, and the list refreshes itself.
(function () {
  'use strict';

  // A decision form asks first: the dialog repeats what is being decided.
  function confirmFirst(form) {
    form.addEventListener('submit', function (ev) {
      var dlg = document.getElementById('confirm');
      if (form.dataset.confirmed === '1' || !dlg || typeof dlg.showModal !== 'function')
        return; // the server asks instead (a confirmation page)
      ev.preventDefault();
      var summary = document.getElementById('summary');
      var reason = form.querySelector('textarea[name=reason]');
      var id = (form.getAttribute('action') || '').split('/')[2] || '';
      document.getElementById('confirm-what').textContent =
        form.dataset.verb + ' operation ' + id + '?';
      document.getElementById('confirm-summary').textContent = summary ? summary.innerText : '';
      document.getElementById('confirm-reason').textContent =
        reason ? 'Reason: ' + reason.value : '';
      var ok = document.getElementById('dialog-confirm');
      var cancel = document.getElementById('dialog-cancel');
      ok.onclick = function () {
        var c = document.createElement('input');
        c.type = 'hidden';
        c.name = 'confirm';
        c.value = '1';
        form.appendChild(c);
        form.dataset.confirmed = '1';
        dlg.close();
        form.submit();
      };
      cancel.onclick = function () { dlg.close(); };
      dlg.showModal();
      ok.focus();
    });
  }

  // The list and the dashboard figure, fetched again every 3 s and swapped in place (rows
  // decided elsewhere leave; an expanded row stays expanded).
  function refresh() {
    var area = document.getElementById('list-area');
    if (!area || document.hidden)
      return;
    fetch(window.location.href, { credentials: 'same-origin', cache: 'no-store' })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (!text)
          return;
        var doc = new DOMParser().parseFromString(text, 'text/html');
        var fresh = doc.getElementById('list-area');
        var count = doc.getElementById('pending-count');
        if (fresh) {
          var open = {};
          area.querySelectorAll('details[open]').forEach(function (d) {
            open[d.dataset.id] = true;
          });
          area.replaceChildren.apply(area, Array.prototype.slice.call(fresh.childNodes)
            .map(function (n) { return document.importNode(n, true); }));
          area.querySelectorAll('details').forEach(function (d) {
            if (open[d.dataset.id]) d.open = true;
          });
        }
        var mine = document.getElementById('pending-count');
        if (count && mine)
          mine.textContent = count.textContent;
      })
      .catch(function () { /* the next round tries again */ });
  }

  document.addEventListener('DOMContentLoaded', function () {
    document.querySelectorAll('form.decide').forEach(confirmFirst);
    if (document.getElementById('list-area'))
      window.setInterval(refresh, 3000);
  });
})();
