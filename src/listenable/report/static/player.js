/* listenable gallery: one player per clip whose tracks switch in place (the position is
   kept), a spectrogram with a playhead that seeks on click and loops a dragged part, sort
   and filter, and "play in a row". No dependencies; the only script the pages load. */
(function () {
  "use strict";
  var list = document.getElementById("clips");
  if (!list) return;
  var items = Array.prototype.slice.call(list.children);
  items.forEach(function (li, i) { li.listenableOrder = i; });
  var current = null;  // the player that keys act on
  var playing = null;  // the player that is playing
  var row = null;      // {queue, index, kind} while playing in a row

  function $(id) { return document.getElementById(id); }
  function clamp(x, lo, hi) { return Math.min(hi, Math.max(lo, x)); }
  function fmt(t) { return (Math.round(t * 100) / 100).toFixed(2); }
  function quiet(promise) { if (promise && promise.catch) promise.catch(function () {}); }

  function Player(li) {
    this.li = li;
    this.buttons = Array.prototype.slice.call(li.querySelectorAll("button.track"));
    this.spec = li.querySelector(".spec");
    this.view = li.querySelector(".view");
    this.playhead = li.querySelector(".playhead");
    this.regionEl = null;  // made on the first drag
    this.timeEl = li.querySelector(".time");
    this.playEl = li.querySelector("button.play");
    this.loopEl = li.querySelector("input.loop");
    this.duration = parseFloat(li.getAttribute("data-duration")) || 0;
    this.audios = [];
    this.t = 0;          // the position while no audio exists yet
    this.region = null;  // [start, end] in seconds, looped when "loop" is on
    this.active = 0;
    for (var i = 0; i < this.buttons.length; i++) {
      if (!this.buttons[i].disabled) { this.active = i; break; }
    }
    this.mark();
  }
  var P = Player.prototype;

  P.audio = function (i) {
    var b = this.buttons[i];
    if (!b || b.disabled) return null;
    if (!this.audios[i]) {
      var a = new Audio(), self = this;
      a.preload = "auto";
      a.src = b.getAttribute("data-src");
      a.addEventListener("ended", function () { if (a === self.audios[self.active]) self.ended(); });
      a.addEventListener("error", function () {  // undecodable: mark it, a row goes on
        b.disabled = true;
        b.classList.add("failed");
        if (a === self.audios[self.active]) self.ended();
      });
      a.addEventListener("loadedmetadata", function () {
        if (isFinite(a.duration) && a.duration > 0) self.duration = a.duration;
      });
      this.audios[i] = a;
    }
    return this.audios[i];
  };
  P.loadAll = function () { for (var i = 0; i < this.buttons.length; i++) this.audio(i); };
  P.time = function () { var a = this.audios[this.active]; return a ? a.currentTime : this.t; };
  P.isPlaying = function () { var a = this.audios[this.active]; return !!a && !a.paused; };
  P.looping = function () { return this.loopEl && this.loopEl.checked && !row; };

  P.play = function () {
    var a = this.audio(this.active);
    if (!a) return;
    if (playing && playing !== this) playing.pause();
    if (row && row.player !== this) stopRow();
    select(this);
    this.loadAll();  // the other tracks buffer while this one plays: switching is quick
    if (!this.audios[this.active].played.length && this.t) a.currentTime = this.t;
    a.loop = this.looping() && !this.region;
    quiet(a.play());
    playing = this;
    this.li.classList.add("playing");
    this.playEl.textContent = "❚❚";
    this.playEl.setAttribute("aria-label", "pause");
    this.tick();
  };
  P.pause = function () {
    this.t = this.time();
    this.audios.forEach(function (a) { if (a) a.pause(); });
    if (playing === this) playing = null;
    this.li.classList.remove("playing");
    this.playEl.textContent = "▶";
    this.playEl.setAttribute("aria-label", "play");
    this.draw();
  };
  P.toggle = function () { if (this.isPlaying()) this.pause(); else this.play(); };

  P.choose = function (i) {  // switch track, keep the position (and keep playing)
    var b = this.buttons[i];
    if (!b || b.disabled || i === this.active) return;
    var was = this.isPlaying(), t = this.time(), old = this.audios[this.active];
    var a = this.audio(i);
    a.currentTime = t;
    a.loop = this.looping() && !this.region;
    if (old) old.pause();
    this.active = i;
    this.t = t;
    this.mark();
    if (was) quiet(a.play());
    this.draw();
  };
  P.chooseKind = function (kind) {
    for (var i = 0; i < this.buttons.length; i++) {
      var b = this.buttons[i];
      if (b.getAttribute("data-kind") === kind && !b.disabled) {
        this.choose(i);
        return true;
      }
    }
    return false;
  };
  P.mark = function () {
    var self = this;
    this.buttons.forEach(function (b, i) { b.setAttribute("aria-pressed", i === self.active ? "true" : "false"); });
    if (this.view) this.view.className = this.view.className.replace(/\bk\d+\b/, "k" + this.active);
  };

  P.seek = function (t) {
    t = clamp(t, 0, this.duration || 0);
    var a = this.audios[this.active];
    if (a) a.currentTime = t;
    this.t = t;
    this.draw();
  };
  P.ended = function () {
    if (this.looping()) { this.seek(this.region ? this.region[0] : 0); quiet(this.audios[this.active].play()); return; }
    this.pause();
    this.seek(0);
    if (row && row.player === this) nextInRow();
  };
  P.tick = function () {
    var self = this;
    if (this.raf) return;
    function frame() {
      self.raf = 0;
      if (!self.isPlaying()) { self.draw(); return; }
      var a = self.audios[self.active];
      if (self.region && self.looping() && (a.currentTime >= self.region[1] || a.currentTime < self.region[0] - 0.05)) {
        a.currentTime = self.region[0];
      }
      self.draw();
      self.raf = requestAnimationFrame(frame);
    }
    this.raf = requestAnimationFrame(frame);
  };
  P.draw = function () {
    var t = this.time(), d = this.duration || 0;
    if (this.playhead) this.playhead.style.left = (d ? clamp(t / d, 0, 1) * 100 : 0) + "%";
    if (this.timeEl) this.timeEl.textContent = fmt(t) + " / " + fmt(d) + " s";
  };
  P.setRegion = function (a, b) {
    var d = this.duration || 0;
    this.region = d && b - a > 0.02 ? [a, b] : null;
    if (this.region && !this.regionEl && this.view) {
      this.regionEl = document.createElement("div");
      this.regionEl.className = "region";
      this.view.insertBefore(this.regionEl, this.playhead);
    }
    if (this.regionEl) {
      this.regionEl.hidden = !this.region;
      if (this.region) {
        this.regionEl.style.left = (a / d * 100) + "%";
        this.regionEl.style.width = ((b - a) / d * 100) + "%";
      }
    }
    var audio = this.audios[this.active];
    if (audio) audio.loop = this.looping() && !this.region;
  };

  function player(li) { return li.listenablePlayer || (li.listenablePlayer = new Player(li)); }
  function select(p) {
    if (current === p) return;
    if (current) current.li.classList.remove("current");
    current = p;
    p.li.classList.add("current");
  }
  function firstVisible() {
    var li = Array.prototype.find.call(list.children, function (x) { return !x.hidden; });
    return li ? player(li) : null;
  }

  // ---------------------------------------------------------------- clicks and drags
  list.addEventListener("click", function (e) {
    var li = e.target.closest("li.clip");
    if (!li) return;
    var p = player(li);
    var b = e.target.closest("button");
    select(p);
    if (!b) return;
    if (b.classList.contains("play")) p.toggle();
    else if (b.classList.contains("track") || b.classList.contains("pick")) {
      var i = b.classList.contains("track") ? p.buttons.indexOf(b) : parseInt(b.getAttribute("data-panel"), 10);
      p.choose(i);
    }
  });
  list.addEventListener("change", function (e) {
    var li = e.target.closest("li.clip");
    if (!li) return;
    var p = player(li);
    if (e.target.classList.contains("outline-toggle") && p.spec) {
      p.spec.classList.toggle("no-outline", !e.target.checked);
    } else if (e.target.classList.contains("loop")) {
      var a = p.audios[p.active];
      if (a) a.loop = p.looping() && !p.region;
    }
  });
  list.addEventListener("pointerdown", function (e) {
    var view = e.target.closest(".view");
    if (!view || e.button !== 0) return;
    var p = player(view.closest("li.clip"));
    select(p);
    var rect = view.getBoundingClientRect(), x0 = e.clientX, dragging = false;
    function at(x) { return clamp((x - rect.left) / rect.width, 0, 1) * (p.duration || 0); }
    function move(ev) {
      if (!dragging && Math.abs(ev.clientX - x0) < 5) return;
      dragging = true;
      var a = at(x0), b = at(ev.clientX);
      p.setRegion(Math.min(a, b), Math.max(a, b));
    }
    function up(ev) {
      view.removeEventListener("pointermove", move);
      view.removeEventListener("pointerup", up);
      view.removeEventListener("pointercancel", up);
      if (dragging && p.region) {
        if (p.loopEl) p.loopEl.checked = true;
        p.setRegion(p.region[0], p.region[1]);
        p.seek(p.region[0]);
      } else {
        var t = at(ev.clientX);
        if (p.region && (t < p.region[0] || t > p.region[1])) p.setRegion(0, 0);
        p.seek(t);
      }
    }
    if (view.setPointerCapture) view.setPointerCapture(e.pointerId);
    view.addEventListener("pointermove", move);
    view.addEventListener("pointerup", up);
    view.addEventListener("pointercancel", up);
    e.preventDefault();
  });

  // ---------------------------------------------------------------- keys
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var t = e.target, tag = t && t.tagName;
    if (tag === "SELECT" || tag === "TEXTAREA" || (tag === "INPUT" && t.type !== "checkbox")) return;
    var p = current || firstVisible();
    if (!p) return;
    if (e.key === " " || e.key === "Spacebar") {
      e.preventDefault();
      if (!e.repeat) p.toggle();
    } else if (/^[1-9]$/.test(e.key)) {
      e.preventDefault();
      select(p);
      p.choose(parseInt(e.key, 10) - 1);
    } else if ((e.key === "l" || e.key === "L") && p.loopEl) {
      p.loopEl.checked = !p.loopEl.checked;
      p.setRegion(p.region ? p.region[0] : 0, p.region ? p.region[1] : 0);
    }
  });
  document.addEventListener("keyup", function (e) {  // no button "click" on space as well
    if (e.key === " " && e.target && e.target.tagName === "BUTTON" && list.contains(e.target)) e.preventDefault();
  });

  // ---------------------------------------------------------------- sort and filter
  var sortEl = $("sort"), correctEl = $("filter-correct"), minConfEl = $("min-confidence");
  var minAreaEl = $("min-area"), maxAreaEl = $("max-area"), countEl = $("count");
  function num(li, key) { return parseFloat(li.getAttribute("data-" + key)); }
  function value(el, fallback) { var v = parseFloat(el && el.value); return isNaN(v) ? fallback : v; }
  function order(a, b) {
    var key = sortEl ? sortEl.value : "confidence-desc", d = 0;
    if (key === "id") d = a.getAttribute("data-id").localeCompare(b.getAttribute("data-id"));
    else {
      var field = key.split("-")[0] === "area" ? "area" : "confidence";
      d = num(a, field) - num(b, field);
      if (key.slice(-4) === "desc") d = -d;
    }
    return d || a.listenableOrder - b.listenableOrder;
  }
  function apply() {
    var want = correctEl ? correctEl.value : "all";
    var minConf = value(minConfEl, 0), minArea = value(minAreaEl, 0), maxArea = value(maxAreaEl, 1);
    var sorted = items.slice().sort(order), shown = 0, fragment = document.createDocumentFragment();
    sorted.forEach(function (li) {
      var area = num(li, "area");
      var ok = (want === "all" || li.getAttribute("data-correct") === want) &&
        num(li, "confidence") >= minConf - 1e-9 && area >= minArea - 1e-9 && area <= maxArea + 1e-9;
      li.hidden = !ok;
      shown += ok ? 1 : 0;
      fragment.appendChild(li);
    });
    list.appendChild(fragment);
    if (countEl) countEl.textContent = shown + " of " + items.length + " clips";
    if (playing && playing.li.hidden) playing.pause();
  }
  [sortEl, correctEl, minConfEl, minAreaEl, maxAreaEl].forEach(function (el) {
    if (el) { el.addEventListener("input", apply); el.addEventListener("change", apply); }
  });

  // ---------------------------------------------------------------- play in a row
  var rowButton = $("row-play"), rowTrack = $("row-track");
  function nextInRow() {
    if (!row) return;
    row.index += 1;
    if (row.index >= row.queue.length) { stopRow(); return; }
    var p = player(row.queue[row.index]);
    row.player = p;
    p.setRegion(0, 0);
    if (!p.chooseKind(row.kind)) { nextInRow(); return; }
    p.seek(0);
    p.play();
    p.li.scrollIntoView({block: "nearest"});
  }
  function stopRow() {
    if (!row) return;
    var p = row.player;
    row = null;
    if (p && p.isPlaying()) p.pause();
    rowButton.setAttribute("aria-pressed", "false");
    rowButton.textContent = "▶ play in a row";
  }
  if (rowButton) {
    rowButton.addEventListener("click", function () {
      if (row) { stopRow(); return; }
      if (playing) playing.pause();
      var queue = Array.prototype.filter.call(list.children, function (li) { return !li.hidden; });
      if (!queue.length) return;
      row = {queue: queue, index: -1, kind: rowTrack ? rowTrack.value : "listenable", player: null};
      rowButton.setAttribute("aria-pressed", "true");
      rowButton.textContent = "■ stop the row";
      nextInRow();
    });
  }
  document.documentElement.setAttribute("data-player", "ready");
})();
