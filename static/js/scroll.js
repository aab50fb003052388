// Autoscroll that follows the answer until the reader scrolls up, then offers
// a "Jump to latest" button instead of pulling the page away from them.

const NEAR_BOTTOM_PX = 48;

/**
 * @param {HTMLElement} scroller the scrolling conversation
 * @param {HTMLButtonElement} jumpButton shown while the reader is away from the end
 */
export function createAutoscroll(scroller, jumpButton) {
  let following = true;

  const atBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight <= NEAR_BOTTOM_PX;

  const update = () => {
    jumpButton.hidden = following || atBottom();
  };

  scroller.addEventListener(
    "scroll",
    () => {
      following = atBottom();
      update();
    },
    { passive: true },
  );

  const toBottom = () => {
    following = true;
    scroller.scrollTop = scroller.scrollHeight;
    update();
  };

  // Instant, not smooth: an answer growing during a smooth scroll would leave it short of the end.
  jumpButton.addEventListener("click", () => toBottom());

  return {
    /** Content changed: keep the end in view if the reader was following. */
    changed() {
      if (following) scroller.scrollTop = scroller.scrollHeight;
      update();
    },
    /** Follow again and jump to the end (a new message was sent, a conversation opened). */
    toBottom,
  };
}
