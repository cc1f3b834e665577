// 登録状況: follow the server's event stream and swap in each update of the status part.
// The page is complete without this file (server-rendered); this only keeps it current.
(function () {
  "use strict";
  var box = document.getElementById("live-status");
  var note = document.getElementById("live-note");
  if (!box || !note || !window.EventSource) {
    return;
  }
  var source = new EventSource(box.getAttribute("data-stream"));
  function stopped() {
    source.close();
    note.textContent = note.getAttribute("data-stopped");
    box.setAttribute("data-live", "stopped");
  }
  source.addEventListener("status", function (event) {
    var update = JSON.parse(event.data);
    // Rendered and escaped by the server's templates, like the page itself.
    box.innerHTML = update.html;
    note.textContent = note.getAttribute("data-live");
    box.setAttribute("data-live", "on");
  });
  source.addEventListener("end", stopped);
  source.addEventListener("error", function () {
    if (source.readyState === EventSource.CLOSED) {
      stopped();
    }
  });
})();
