// The model picker: filled from GET /api/models, remembering the last choice.
// Providers that cannot be reached are listed as such (a disabled entry and a
// notice), not silently left out.

import { listModels } from "./api.js";
import { lastModel, setLastModel } from "./store.js";

/**
 * @param {HTMLSelectElement} select
 * @param {HTMLElement} notice where unreachable providers are reported
 * @param {string} defaultModel the server's SLUICE_DEFAULT_MODEL
 * @param {(error: import("./api.js").ApiError) => void} onError listing failed (401, network…)
 */
export function createModelPicker(select, notice, defaultModel, onError) {
  const remembered = lastModel();
  setOptions([{ label: null, options: [remembered || defaultModel] }], remembered || defaultModel);

  select.addEventListener("change", () => setLastModel(select.value));

  function option(id, text = id, disabled = false) {
    const element = document.createElement("option");
    element.value = disabled ? "" : id;
    element.textContent = text;
    element.disabled = disabled;
    return element;
  }

  function setOptions(groups, wanted) {
    const children = [];
    for (const group of groups) {
      const items = group.options.map((item) => (typeof item === "string" ? option(item) : item));
      if (group.label === null) {
        children.push(...items);
      } else {
        const optgroup = document.createElement("optgroup");
        optgroup.label = group.label;
        optgroup.append(...items);
        children.push(optgroup);
      }
    }
    select.replaceChildren(...children);
    const ids = [...select.options].filter((o) => !o.disabled).map((o) => o.value);
    select.value = ids.includes(wanted) ? wanted : ids.includes(defaultModel) ? defaultModel : ids[0] || "";
  }

  async function refresh() {
    const wanted = lastModel() || select.value || defaultModel;
    let listing;
    select.setAttribute("aria-busy", "true");
    try {
      listing = await listModels();
    } catch (error) {
      select.removeAttribute("aria-busy");
      notice.textContent = `Models could not be listed: ${error.message}`;
      notice.hidden = false;
      onError(error);
      return;
    }
    select.removeAttribute("aria-busy");
    const byProvider = new Map();
    for (const model of listing.models || []) {
      if (!byProvider.has(model.provider)) byProvider.set(model.provider, []);
      byProvider.get(model.provider).push(model.id);
    }
    const groups = [];
    const down = [];
    for (const [name, status] of Object.entries(listing.providers || {})) {
      if (status.status === "ok") {
        if (byProvider.has(name)) groups.push({ label: name, options: byProvider.get(name) });
      } else {
        const message = (status.error && status.error.message) || "cannot be reached";
        down.push(`${name}: ${message}`);
        groups.push({ label: `${name} (unavailable)`, options: [option("", `${name} is unavailable`, true)] });
      }
    }
    for (const [name, ids] of byProvider) {
      if (!(name in (listing.providers || {}))) groups.push({ label: name, options: ids });
    }
    setOptions(groups, wanted);
    notice.textContent = down.length ? `Unavailable: ${down.join(" · ")}` : "";
    notice.hidden = down.length === 0;
  }

  return { refresh, value: () => select.value || defaultModel };
}
