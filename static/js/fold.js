// The page's answer fold: one event of a generation into the answer it
// stores, with the same rules as the server's fold (sluice/fold.py):
// text, reasoning and refusal pieces are joined; tool-call pieces are gathered
// per `index` (`id` and `name` from the piece that has them, `arguments`
// joined); `done` gives the finish reason and the usage the upstream
// reported; `error` the error. No DOM, no storage: tests/test_fold.py drives
// the same event list through this and through sluice/fold.py and compares.

/**
 * @typedef {{index: number, id: string|null, name: string, arguments: string}} ToolCall
 * @typedef {{content: string, reasoning: string, refusal: string, toolCalls: ToolCall[],
 *   finishReason: string|null, usage: object|null, error: object|null}} Folded
 */

/** An empty answer. @returns {Folded} */
export function emptyAnswer() {
  return { content: "", reasoning: "", refusal: "", toolCalls: [], finishReason: null, usage: null, error: null };
}

/**
 * Fold one event into `answer`.
 * @param {Folded} answer
 * @param {any} event a generation's JSON event
 * @returns {"piece"|"done"|"error"|null} what it was: a piece from the model, the end, or nothing to fold
 */
export function foldEvent(answer, event) {
  switch (event.type) {
    case "delta":
      answer.content = (answer.content || "") + (event.content || "");
      return "piece";
    case "reasoning":
      answer.reasoning = (answer.reasoning || "") + (event.content || "");
      return "piece";
    case "refusal":
      answer.refusal = (answer.refusal || "") + (event.content || "");
      return "piece";
    case "tool_call":
      addToolCallPiece(answer, event);
      return "piece";
    case "done":
      answer.finishReason = event.finish_reason;
      answer.usage = event.usage || null;
      return "done";
    case "error":
      answer.error = event.error || { code: "upstream_error", message: "" };
      return "error";
    default:
      return null; // start, and event types this page does not know
  }
}

/**
 * A piece of a tool call: the first of an `index` has its id and name, later ones more arguments.
 * @param {Folded} answer
 * @param {any} event
 */
function addToolCallPiece(answer, event) {
  if (!Array.isArray(answer.toolCalls)) answer.toolCalls = [];
  const index = Number.isInteger(event.index) ? event.index : answer.toolCalls.length;
  let call = answer.toolCalls.find((c) => c.index === index);
  if (!call) {
    call = { index, id: null, name: "", arguments: "" };
    answer.toolCalls.push(call);
    answer.toolCalls.sort((a, b) => a.index - b.index);
  }
  if (event.id != null) call.id = event.id;
  if (event.name != null) call.name = event.name;
  if (typeof event.arguments === "string") call.arguments += event.arguments;
  else if (event.arguments && typeof event.arguments === "object") call.arguments = JSON.stringify(event.arguments);
}

/**
 * Fold a whole list of events.
 * @param {any[]} events
 * @returns {Folded}
 */
export function foldEvents(events) {
  const answer = emptyAnswer();
  for (const event of events) foldEvent(answer, event);
  return answer;
}
