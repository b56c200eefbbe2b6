// The admin key: asked for once per tab, dropped again when the gateway refuses it.

import { ApiError, api, keys } from "./api.js";

export function askAdminKey() {
  const dialog = document.getElementById("admin-dialog");
  return new Promise((resolve) => {
    if (dialog.open) { dialog.addEventListener("close", () => resolve(keys.admin), { once: true }); return; }
    document.getElementById("admin-key").value = "";
    dialog.addEventListener("close", () => {
      keys.admin = document.getElementById("admin-key").value.trim();
      resolve(keys.admin);
    }, { once: true });
    dialog.showModal();
  });
}

// An admin call; asks for the key first when there is none, and again after a 401.
export async function adminApi(path, options = {}) {
  if (!keys.admin && !(await askAdminKey())) throw new ApiError(401, "an admin key is required");
  try {
    return await api(path, { ...options, admin: true });
  } catch (error) {
    if (error.status === 401) keys.admin = "";
    throw error;
  }
}
