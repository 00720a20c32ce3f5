// The queues page: re-reads itself every few seconds and swaps in its live part (counts,
// utilisation, the server-drawn charts), so it stays current without a reload.
// Loaded as a file (the dashboard's CSP runs no inline script); its interval comes from
// the data-every attribute of its own <script id="queues-script"> tag.
const every = Number(document.getElementById("queues-script").dataset.every) || 3000;

const refresh = async () => {
  if (document.hidden) return;
  const live = document.getElementById("live");
  // Never swap a form out from under a pointer or a keyboard about to press it.
  if (live.contains(document.activeElement) && document.activeElement !== document.body) return;
  try {
    const response = await fetch(location.href, { headers: { Accept: "text/html" } });
    if (!response.ok) return;
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = page.getElementById("live");
    if (fresh !== null) {
      live.replaceWith(document.adoptNode(fresh));
      document.dispatchEvent(new CustomEvent("trioforge:refreshed"));
    }
  } catch {
    // Offline for a moment: the next tick tries again.
  }
};

setInterval(refresh, every);
