import Hummingbird
import NIOCore

/// The page at `/` (what `make demo` opens): the dashboard in miniature. It lists the catalog's
/// episodes by podcast (`/api/v1/episodes`), searches the transcripts (`/api/v1/search`) and
/// plays a clip with its captions (`<track>` on the `.vtt`) and its waveform (a canvas drawn from
/// the `.json` peaks), all cut at the nearest pauses (`snap=pause`), with a link that downloads
/// the same window as a tagged file (`download=1`). Plain HTML, CSS and JS, nothing fetched from elsewhere.
///
/// Query parameters: `q` searches on load, `autoplay=1` then plays the first result, `check=1`
/// loads every listed episode's first clip (tests: every listed clip must play). State for tests
/// is in data- attributes: on `#player` `src` (the clip URL played), `duration`, `cues`, `waveform-drawn` (pixels the waveform
/// inked), `error`; on `#results` and `#episodes` `count`; on each episode `src`, then `duration` or `error`.
enum DashboardPage {
    static func response() -> Response {
        Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-cache"],
                 body: ResponseBody(byteBuffer: ByteBuffer(string: html)))
    }

    static let html = #"""
    <!doctype html>
    <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
    <title>clipproxy dashboard</title>
    <style>
    :root{--ink:#1d2330;--muted:#5b6475;--line:#dde1e8;--accent:#2458d6;--wave:#7d93c9;--played:#2458d6;--bg:#f6f7f9}
    *{box-sizing:border-box}body{font:15px/1.45 system-ui,sans-serif;color:var(--ink);margin:0;background:var(--bg)}
    header{padding:.8rem 1.5rem;background:#fff;border-bottom:1px solid var(--line)}h1{font-size:1.2rem;margin:0}
    header p{margin:.15rem 0 0;color:var(--muted);font-size:.85rem}
    main{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:1.2rem;padding:1.2rem 1.5rem;max-width:80rem}
    .panel{background:#fff;border:1px solid var(--line);border-radius:8px;padding:1rem}
    h2{font-size:1rem;margin:0 0 .6rem}h3{font-size:.9rem;margin:.9rem 0 .3rem;color:var(--muted)}
    form{display:flex;gap:.5rem;align-items:center}label{font-weight:600}
    input[type=search]{flex:1;padding:.45rem .6rem;font:inherit;border:1px solid #b8bfcc;border-radius:6px}
    button{font:inherit;padding:.35rem .8rem;border:1px solid var(--accent);background:#fff;color:var(--accent);border-radius:6px;cursor:pointer}
    button:hover,button:focus-visible{background:var(--accent);color:#fff}
    :focus-visible{outline:3px solid #f2b01e;outline-offset:2px}
    ol,ul{list-style:none;margin:0;padding:0}
    .hit{display:grid;grid-template-columns:1fr auto;gap:.2rem .8rem;padding:.6rem 0;border-top:1px solid var(--line)}
    .hit .meta{font-size:.85rem;color:var(--muted)}.hit p{margin:0}.hit button{grid-row:1/3;grid-column:2;align-self:center}
    mark{background:#ffe58a;color:inherit;padding:0 .1em;border-radius:2px}
    .episode{display:flex;gap:.6rem;align-items:baseline;padding:.25rem 0}.episode .title{flex:1}
    .episode .meta{color:var(--muted);font-size:.8rem;white-space:nowrap}.episode button{padding:.15rem .5rem;font-size:.85rem}
    #player audio{width:100%;margin:.4rem 0}#waveform{width:100%;height:96px;display:block;border-radius:4px;cursor:pointer}
    #caption{min-height:2.9em;margin:.5rem 0 0;font-size:1.05rem}#now-playing{margin:0;font-weight:600}
    .status{color:var(--muted);font-size:.85rem;margin:.4rem 0}.failed{color:#b3261e}
    @media (max-width:50rem){main{grid-template-columns:1fr}}
    </style></head>
    <body>
    <header><h1>clipproxy dashboard</h1><p>Search what was said, then play the moment: a 30 s clip cut at the nearest pauses, with its captions and waveform, to play or download.</p></header>
    <main>
    <div>
      <section class="panel" aria-labelledby="search-heading">
        <h2 id="search-heading">Search transcripts</h2>
        <form id="search" role="search"><label for="q">Words</label>
          <input id="q" name="q" type="search" maxlength="200" placeholder="e.g. lanterns harbour" autocomplete="off" required>
          <button type="submit">Search</button></form>
        <p id="search-status" class="status" role="status" aria-live="polite"></p>
        <ol id="results" aria-label="Search results"></ol>
      </section>
      <section id="player" class="panel" aria-labelledby="now-playing" hidden style="margin-top:1.2rem">
        <p id="now-playing"></p>
        <audio id="audio" controls crossorigin="anonymous" preload="metadata"></audio>
        <canvas id="waveform" width="1000" height="96" tabindex="0" role="slider" aria-label="Waveform: click or use the arrow keys to seek"
          aria-valuemin="0" aria-valuemax="30" aria-valuenow="0"></canvas>
        <p id="caption" aria-live="polite"></p>
        <p><a id="download" download>Download this clip</a></p>
        <p id="player-status" class="status" role="status"></p>
      </section>
    </div>
    <section class="panel" aria-labelledby="episodes-heading">
      <h2 id="episodes-heading">Episodes</h2>
      <div id="episodes"><p class="status">Loading episodes…</p></div>
    </section>
    </main>
    <script>
    'use strict';
    const $ = id => document.getElementById(id);
    const params = new URLSearchParams(location.search);
    const audio = $('audio'), player = $('player'), canvas = $('waveform');
    const colors = {bg: '#eef1f6', wave: '#7d93c9', played: '#2458d6', head: '#d6452b'};
    let peaks = null, playing = 0;

    // Elements are built from text nodes only: catalog text never becomes markup.
    function el(tag, props, ...children) {
      const node = Object.assign(document.createElement(tag), props || {});
      node.append(...children);
      return node;
    }
    function clock(ms) { const s = Math.floor(ms / 1000); return Math.floor(s / 60) + ':' + String(s % 60).padStart(2, '0'); }
    async function getJSON(url) {
      const response = await fetch(url);
      const body = await response.json().catch(() => null);
      if (!response.ok) throw new Error((body && body.detail) || 'HTTP ' + response.status);
      return body;
    }
    function fail(where, message) {
      where.textContent = message;
      where.classList.add('failed');
    }

    // Episodes, grouped by podcast (the API sorts them so).
    async function loadEpisodes() {
      const list = $('episodes');
      try {
        const episodes = await getJSON('/api/v1/episodes');
        list.textContent = '';
        let group = null, podcast = null;
        for (const episode of episodes) {
          if (!group || episode.podcast_name !== podcast) {
            podcast = episode.podcast_name;
            group = el('ul');
            list.append(el('h3', {textContent: podcast || 'Untitled podcast'}), group);
          }
          const date = (episode.published_date || '').slice(0, 10);
          const length = episode.duration_ms == null ? '' : clock(episode.duration_ms);
          const button = el('button', {type: 'button', textContent: 'Play from 0'});
          button.setAttribute('aria-label', 'Play ' + episode.episode_title + ' from the start');
          button.addEventListener('click', () => play({...episode, start_ms: 0}));
          const item = el('li', {className: 'episode'}, el('span', {className: 'title', textContent: episode.episode_title}),
                          el('span', {className: 'meta', textContent: [date, length].filter(Boolean).join(' · ')}), button);
          item.dataset.episodeId = episode.episode_id;
          group.append(item);
          if (params.get('check') === '1') checkPlays(item, episode.clip_url);
        }
        if (!episodes.length) list.append(el('p', {className: 'status', textContent: 'No playable episodes in the catalog.'}));
        list.dataset.count = episodes.length;
      } catch (error) {
        fail(list, 'Episodes could not be listed: ' + error.message);
      }
    }

    // check=1: load the episode's first clip and note its duration (or error) on its row.
    function checkPlays(item, url) {
      item.dataset.src = url;
      const probe = new Audio();
      probe.crossOrigin = 'anonymous';
      probe.preload = 'metadata';
      probe.addEventListener('loadedmetadata', () => { item.dataset.duration = probe.duration; });
      probe.addEventListener('error', () => { item.dataset.error = probe.error ? probe.error.code : 'unknown'; });
      probe.src = url;
    }

    // Search: every word must appear; matches are marked in the snippet.
    async function search(text) {
      const results = $('results'), status = $('search-status');
      results.textContent = '';
      delete results.dataset.count;
      status.classList.remove('failed');
      status.textContent = 'Searching…';
      try {
        const hits = await getJSON('/api/v1/search?q=' + encodeURIComponent(text) + '&limit=20');
        const words = text.split(/\s+/).filter(Boolean);
        for (const hit of hits) {
          const button = el('button', {type: 'button', textContent: 'Play'});
          button.setAttribute('aria-label', 'Play ' + hit.episode_title + ' at ' + clock(hit.start_ms));
          button.addEventListener('click', () => play(hit));
          results.append(el('li', {className: 'hit'},
            el('div', {className: 'meta'}, el('strong', {textContent: hit.podcast_name}), ' — ' + hit.episode_title + ' · ',
               el('time', {textContent: clock(hit.start_ms)})),
            el('p', {}, ...highlight(hit.text, words)), button));
        }
        status.textContent = hits.length ? hits.length + (hits.length === 1 ? ' moment' : ' moments') + ' found'
                                         : 'No transcript chunk holds every word.';
        results.dataset.count = hits.length;
        return hits;
      } catch (error) {
        fail(status, 'Search failed: ' + error.message);
        return [];
      }
    }
    function highlight(text, words) {
      const pattern = new RegExp(words.map(w => w.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'giu');
      const parts = [];
      let last = 0;
      for (const match of text.matchAll(pattern)) {
        parts.push(text.slice(last, match.index), el('mark', {textContent: match[0]}));
        last = match.index + match[0].length;
      }
      parts.push(text.slice(last));
      return parts;
    }

    // Playing: the clip, its captions as a hidden track shown under the player, its waveform.
    function play(item) {
      const token = ++playing;
      player.hidden = false;
      for (const key of ['duration', 'cues', 'waveformDrawn', 'error']) delete player.dataset[key];
      $('player-status').classList.remove('failed');
      $('player-status').textContent = '';
      $('now-playing').textContent = item.podcast_name + ' — ' + item.episode_title + ' from ' + clock(item.start_ms);
      $('caption').textContent = '';
      audio.querySelectorAll('track').forEach(old => old.remove());
      const track = el('track', {kind: 'captions', srclang: 'en', label: 'Transcript', default: true, src: item.captions_url});
      track.addEventListener('load', () => { if (token === playing) player.dataset.cues = track.track.cues.length; });
      track.addEventListener('error', () => playerFailed('the captions did not load'));
      audio.append(track);
      track.track.mode = 'hidden';
      track.track.addEventListener('cuechange', () => {
        const cue = track.track.activeCues[0];
        $('caption').textContent = cue ? cue.text : '';
      });
      player.dataset.src = item.clip_url;
      $('download').href = item.download_url;
      audio.src = item.clip_url;
      audio.play().catch(() => {});  // without a user gesture a browser may refuse; the controls remain
      loadPeaks(item.peaks_url, token);
    }
    function playerFailed(message) {
      player.dataset.error = message;
      fail($('player-status'), message);
    }
    audio.addEventListener('loadedmetadata', () => {
      player.dataset.duration = audio.duration;
      canvas.setAttribute('aria-valuemax', Math.round(audio.duration));
      draw();
    });
    audio.addEventListener('error', () => playerFailed('the clip did not load (media error ' + (audio.error && audio.error.code) + ')'));
    for (const event of ['timeupdate', 'seeked']) audio.addEventListener(event, () => draw());
    audio.addEventListener('play', function frame() { draw(); if (!audio.paused) requestAnimationFrame(frame); });

    // Waveform: audiowaveform JSON (min/max pairs) folded into one min/max per canvas column.
    async function loadPeaks(url, token) {
      peaks = null;
      draw();
      try {
        const wave = await getJSON(url);
        if (token !== playing) return;
        const columns = canvas.width, scale = wave.bits === 16 ? 32768 : 128;
        const low = new Float32Array(columns).fill(1), high = new Float32Array(columns).fill(-1);
        for (let i = 0; i < wave.length; i++) {
          const x = Math.min(columns - 1, Math.floor(i * columns / wave.length));
          low[x] = Math.min(low[x], wave.data[2 * i] / scale);
          high[x] = Math.max(high[x], wave.data[2 * i + 1] / scale);
        }
        peaks = {low, high, seconds: wave.length * wave.samples_per_pixel / wave.sample_rate};
        draw(false);
        player.dataset.waveformDrawn = inkedPixels();
        draw();
      } catch (error) {
        playerFailed('the waveform did not load: ' + error.message);
      }
    }
    function draw(withPlayhead = true) {
      const g = canvas.getContext('2d'), width = canvas.width, height = canvas.height, middle = height / 2;
      g.fillStyle = colors.bg;
      g.fillRect(0, 0, width, height);
      if (!peaks) return;
      const length = audio.duration || peaks.seconds;
      const head = withPlayhead ? Math.round(audio.currentTime / length * width) : -1;
      for (let x = 0; x < width; x++) {
        if (peaks.low[x] > peaks.high[x]) continue;
        const top = middle - peaks.high[x] * middle, bottom = middle - peaks.low[x] * middle;
        g.fillStyle = x < head ? colors.played : colors.wave;
        g.fillRect(x, top, 1, Math.max(1, bottom - top));
      }
      if (withPlayhead) {
        g.fillStyle = colors.head;
        g.fillRect(Math.min(head, width - 2), 0, 2, height);
        canvas.setAttribute('aria-valuenow', Math.round(audio.currentTime));
      }
    }
    // How many pixels differ from the background: 0 means a blank canvas.
    function inkedPixels() {
      const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
      const bg = [0xee, 0xf1, 0xf6];
      let inked = 0;
      for (let i = 0; i < pixels.length; i += 4) {
        if (pixels[i] !== bg[0] || pixels[i + 1] !== bg[1] || pixels[i + 2] !== bg[2]) inked++;
      }
      return inked;
    }
    function seek(seconds) {
      if (audio.duration) audio.currentTime = Math.max(0, Math.min(audio.duration, seconds));
    }
    canvas.addEventListener('click', event => seek(event.offsetX / canvas.clientWidth * audio.duration));
    canvas.addEventListener('keydown', event => {
      const step = {ArrowLeft: -5, ArrowRight: 5, Home: -Infinity, End: Infinity}[event.key];
      if (step === undefined) return;
      event.preventDefault();
      seek(audio.currentTime + step);
    });

    $('search').addEventListener('submit', event => {
      event.preventDefault();
      const text = $('q').value.trim();
      if (!text) return;
      history.replaceState(null, '', '?q=' + encodeURIComponent(text));
      search(text);
    });
    loadEpisodes();
    const asked = (params.get('q') || '').trim();
    if (asked) {
      $('q').value = asked;
      search(asked).then(hits => { if (params.get('autoplay') === '1' && hits.length) play(hits[0]); });
    }
    </script>
    </body></html>
    """#
}
