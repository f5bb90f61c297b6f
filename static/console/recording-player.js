// The call page's and the admin's recording player: a transcript turn's time link seeks the page's
// <audio data-recording> and plays from there. The server streams the file with Range support, and
// the file carries a duration and cues, so the browser can seek without downloading it all.

const player = document.querySelector("audio[data-recording]");

if (player) {
  document.addEventListener("click", (event) => {
    const link = event.target.closest("a[data-seek]");
    if (!link) return;
    event.preventDefault();
    const at = Number(link.dataset.seek);
    if (!Number.isFinite(at)) return;
    const seek = () => {
      player.currentTime = at;
      player.play().catch(() => {});
    };
    // Before the metadata is in, a seek is lost: wait for it.
    if (player.readyState >= HTMLMediaElement.HAVE_METADATA) seek();
    else {
      player.addEventListener("loadedmetadata", seek, { once: true });
      player.load();
    }
  });
}
