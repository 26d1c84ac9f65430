// The page: asks /stream for an episode and shows it as it is written.
//
// fetch() reads the Server-Sent Events rather than EventSource because
// EventSource hides the status and headers of a refusal: the page needs the
// JSON reason of a 400 and the Retry-After of a 503.
"use strict";

(function () {
  const form = document.getElementById("generate-form");
  const prefixInput = document.getElementById("prefix");
  const lengthSelect = document.getElementById("length");
  const generateButton = document.getElementById("generate");
  const statusText = document.getElementById("status");
  const loader = document.getElementById("loader");
  const errorBox = document.getElementById("error");
  const errorMessage = document.getElementById("error-message");
  const retryButton = document.getElementById("retry");
  const episode = document.getElementById("episode");
  const details = document.getElementById("details");

  let controller = null;
  let lastQuery = null;
  let countdown = null;

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    generate(queryFromForm());
  });
  retryButton.addEventListener("click", () => {
    if (lastQuery) generate(lastQuery);
  });

  function queryFromForm() {
    const prefix = prefixInput.value.trim() ? prefixInput.value : prefixInput.placeholder;
    return new URLSearchParams({ prefix: prefix, length: lengthSelect.value });
  }

  async function generate(query) {
    if (controller) controller.abort();
    controller = new AbortController();
    const signal = controller.signal;
    lastQuery = query;
    hideError();
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
          details.textContent = event.data.tokens + " tokens in " + event.data.seconds +
            " s, model " + event.data.model;
          setState("done");
          return;
        } else if (event.type === "error") {
          showError(event.data.error, event.data.retry_after || 0);
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

  async function showRefusal(response) {
    const retryAfter = parseInt(response.headers.get("Retry-After") || "0", 10) || 0;
    let reason = "the server answered " + response.status;
    try {
      const body = await response.json();
      if (body && body.error) reason = body.error;
    } catch (ignored) {
      // Not JSON: keep the status line.
    }
    const lead = response.status === 503 ? "The generator is busy: " : "Could not generate: ";
    showError(lead + reason + ".", retryAfter);
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

  // One <p> per line of the episode; textContent keeps generated text inert.
  function showEpisode(text) {
    const paragraphs = text.split(/\n+/).filter((line) => line.trim() !== "");
    episode.replaceChildren(...paragraphs.map((line) => {
      const p = document.createElement("p");
      p.textContent = line.trim();
      return p;
    }));
  }

  function setState(state) {
    form.dataset.state = state;
    const busy = state === "waiting" || state === "writing";
    loader.hidden = !busy;
    generateButton.disabled = busy;
    statusText.textContent = state === "waiting" ? "Waiting for the model…"
      : state === "writing" ? "Writing…" : "";
  }

  function showError(message, retryAfterSeconds) {
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
