// The page: asks /stream for an episode and shows it as it is written.
//
// fetch() reads the Server-Sent Events rather than EventSource because
// EventSource hides the status and headers of a refusal: the page needs the
// JSON reason of a 400 and the Retry-After of a 503. Aborting the fetch closes
// the connection, which makes the service cancel the generation.
//
// A share link carries the query in the fragment (/#prefix=...&seed=...):
// the fragment never reaches the server, so the link always gets this page,
// which then asks for the same seeded, hence the same, episode.
"use strict";

(function () {
  const MAX_SEED = 2147483647;
  // The query parameters the form sets, and so the ones a share link carries.
  const SHARED = ["prefix", "length", "temperature", "seed"];
  const FINISH_REASONS = {
    length: "it reached the length asked for",
    stop: "the model ended the episode",
    end_of_text: "the model ended the episode",
  };

  const $ = (id) => document.getElementById(id);
  const form = $("generate-form");
  const fields = { prefix: $("prefix"), length: $("length"), temperature: $("temperature"),
                   seed: $("seed") };
  const temperatureValue = $("temperature-value");
  const stopButton = $("stop");
  const statusText = $("status");
  const loader = $("loader");
  const errorBox = $("error");
  const errorMessage = $("error-message");
  const retryButton = $("retry");
  const result = $("result");
  const shareLink = $("share-link");
  const episode = $("episode");
  const details = $("details");

  let controller = null;
  let lastQuery = null;
  let episodeText = "";
  let countdown = null;

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!fields.seed.value) rollSeed();
    generate(queryFromForm());
  });
  form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  fields.temperature.addEventListener("input", showTemperature);
  $("dice").addEventListener("click", rollSeed);
  $("another").addEventListener("click", () => {
    rollSeed();
    form.requestSubmit();
  });
  stopButton.addEventListener("click", stop);
  retryButton.addEventListener("click", () => {
    if (lastQuery) generate(lastQuery);
  });
  $("copy-link").addEventListener("click", () => copy(shareLink.value, shareLink, "Link copied."));
  $("copy-text").addEventListener("click", () => copy(episodeText, episode, "Text copied."));
  window.addEventListener("hashchange", openShareLink);

  showTemperature();
  if (!openShareLink()) rollSeed();

  // Fills the form from the page's fragment and generates; false without one.
  function openShareLink() {
    const shared = new URLSearchParams(location.hash.slice(1));
    if (!SHARED.some((name) => shared.has(name))) return false;
    for (const name of SHARED) {
      if (shared.has(name)) fields[name].value = shared.get(name);
    }
    showTemperature();
    if (!fields.seed.value) rollSeed();
    generate(queryFromForm());
    return true;
  }

  function queryFromForm() {
    const prefix = fields.prefix.value.trim() ? fields.prefix.value : fields.prefix.placeholder;
    return new URLSearchParams({ prefix: prefix, length: fields.length.value,
                                 temperature: fields.temperature.value,
                                 seed: fields.seed.value });
  }

  function rollSeed() {
    fields.seed.value = crypto.getRandomValues(new Uint32Array(1))[0] % (MAX_SEED + 1);
  }

  function showTemperature() {
    temperatureValue.textContent = fields.temperature.value;
  }

  async function generate(query) {
    if (controller) controller.abort();
    controller = new AbortController();
    const signal = controller.signal;
    lastQuery = query;
    hideError();
    showShareLink(query);
    showEpisode("");
    details.textContent = "";
    setState("waiting");

    let response;
    try {
      response = await fetch("/stream?" + query, {
        headers: { Accept: "text/event-stream" },
        signal: signal,
      });
    } catch (error) {
      if (error.name !== "AbortError") showError("The server cannot be reached. Please retry.", 0);
      return;
    }
    if (!response.ok) {
      await showRefusal(response);
      return;
    }

    let text = query.get("prefix");
    try {
      for await (const event of serverSentEvents(response.body)) {
        if (signal.aborted) return;
        if (event.type === "piece") {
          setState("writing");
          text += event.data.text;
          showEpisode(text);
        } else if (event.type === "done") {
          showEpisode(event.data.text);
          showDetails(event.data);
          setState("done");
          return;
        } else if (event.type === "error") {
          showProblem(event.data.status, event.data.error, event.data.retry_after || 0);
          return;
        }
      }
      showError("The connection closed before the episode was finished. Please retry.", 0);
    } catch (error) {
      if (error.name !== "AbortError") {
        showError("The connection was lost while the episode was written. Please retry.", 0);
      }
    }
  }

  function stop() {
    if (!controller) return;
    controller.abort();
    controller = null;
    setState("stopped");
  }

  async function showRefusal(response) {
    const retryAfter = parseInt(response.headers.get("Retry-After") || "0", 10) || 0;
    let reason = "the server answered " + response.status;
    try {
      const body = await response.json();
      if (body && body.error) reason = body.error;
    } catch (ignored) {
      // Not JSON: keep the status line.
    }
    showProblem(response.status, reason, retryAfter);
  }

  function showProblem(status, reason, retryAfter) {
    const lead = status === 503 ? "The generator is busy: "
      : status === 429 ? "Too many requests from you: " : "Could not generate: ";
    const wait = retryAfter > 0 ? " Retry after " + retryAfter + " s." : "";
    showError(lead + reason + "." + wait, retryAfter);
  }

  // Yields {type, data} for each event of a text/event-stream body.
  async function* serverSentEvents(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event) yield event;
      }
    }
  }

  function parseEvent(frame) {
    let type = "message";
    const data = [];
    for (const line of frame.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") type = value;
      else if (field === "data") data.push(value);
    }
    return data.length ? { type: type, data: JSON.parse(data.join("\n")) } : null;
  }

  // The link, and the address bar, so that a reload or a bookmark keeps the episode.
  function showShareLink(query) {
    const shared = new URLSearchParams();
    for (const name of SHARED) shared.set(name, query.get(name));
    history.replaceState(null, "", "#" + shared);
    shareLink.value = location.href;
    result.hidden = false;
  }

  // One <p> per line of the episode; textContent keeps generated text inert.
  function showEpisode(text) {
    episodeText = text;
    const paragraphs = text.split(/\n+/).filter((line) => line.trim() !== "");
    episode.replaceChildren(...paragraphs.map((line) => {
      const p = document.createElement("p");
      p.textContent = line.trim();
      return p;
    }));
  }

  function showDetails(answer) {
    const why = FINISH_REASONS[answer.finish_reason];
    details.textContent = answer.tokens + " tokens in " + answer.seconds + " s, model " +
      answer.model + (why ? "; it ended because " + why + "." : ".");
  }

  async function copy(text, element, done) {
    try {
      if (navigator.clipboard) await navigator.clipboard.writeText(text);
      else selectAndCopy(element);
      statusText.textContent = done;
    } catch (error) {
      statusText.textContent = "Could not copy: select the text and copy it.";
    }
  }

  // Browsers offer the clipboard API only to secure contexts: a page served over
  // plain HTTP from another host copies its selection instead.
  function selectAndCopy(element) {
    if (element.select) {
      element.select();
    } else {
      const range = document.createRange();
      range.selectNodeContents(element);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
    }
    if (!document.execCommand("copy")) throw new Error("the browser refused to copy");
  }

  function setState(state) {
    form.dataset.state = state;
    const busy = state === "waiting" || state === "writing";
    loader.hidden = !busy;
    stopButton.disabled = !busy;
    episode.setAttribute("aria-busy", String(busy));
    statusText.textContent = state === "waiting" ? "Waiting for the model…"
      : state === "writing" ? "Writing…" : state === "stopped" ? "Stopped." : "";
  }

  function showError(message, retryAfterSeconds) {
    controller = null;
    setState("error");
    errorMessage.textContent = message;
    errorBox.hidden = false;
    clearInterval(countdown);
    let remaining = Math.max(0, Math.ceil(retryAfterSeconds));
    const tick = () => {
      retryButton.disabled = remaining > 0;
      retryButton.textContent = remaining > 0 ? "Retry in " + remaining + " s" : "Retry";
      if (remaining-- <= 0) clearInterval(countdown);
    };
    tick();
    if (remaining >= 0) countdown = setInterval(tick, 1000);
  }

  function hideError() {
    clearInterval(countdown);
    errorBox.hidden = true;
  }
})();
