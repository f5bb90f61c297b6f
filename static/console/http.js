// Same-origin requests to our own server: the CSRF header and JSON error messages.

/** The CSRF token: the page's config first, else Django's `csrftoken` cookie. */
export function csrfToken(config = {}) {
  if (config.csrfToken) return config.csrfToken;
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

/** A readable message from a failed response: our `{"error": {"message"}}` shape, else the status. */
export async function errorMessage(response, what) {
  let detail = `HTTP ${response.status}`;
  try {
    const body = await response.clone().json();
    if (body?.error?.message) detail = `${body.error.message} (HTTP ${response.status})`;
  } catch {
    const text = (await response.text()).trim();
    if (text && text.length < 300) detail = `${text} (HTTP ${response.status})`;
  }
  return `${what} failed: ${detail}`;
}

/** POST to our server with the CSRF header; throws an Error with a readable message unless 2xx. */
export async function postSameOrigin(url, { body = "", contentType = "application/json", config = {}, what = url } = {}) {
  const response = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": contentType, "X-CSRFToken": csrfToken(config) },
    body,
  });
  if (!response.ok) throw new Error(await errorMessage(response, what));
  return response;
}

/** The last path segment of a URL or path (call ids in Location headers). */
export function lastSegment(location) {
  const path = new URL(location, window.location.href).pathname.replace(/\/+$/, "");
  return decodeURIComponent(path.slice(path.lastIndexOf("/") + 1));
}
