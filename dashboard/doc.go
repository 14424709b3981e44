// Package dashboard is the control plane's web view: a read-mostly set of
// pages served on 127.0.0.1 by the control plane itself, from files
// embedded in the binary (no CDN, no framework; it works offline).
//
// The vocabulary: a Server serves the pages. A Ticket is a random one-time
// token in a sign-in link, minted over the API socket — so only someone
// who can reach api.sock (mode 0600) can mint one — and good for
// TicketTTL; /login exchanges it for a Session, an HttpOnly,
// SameSite=Strict cookie that every other request, static files and
// streams included, must carry. A Session holds a CSRF token that every
// form posts back. The Hub fans one store watch of deployments out to
// every open page as server-sent events, and watches only while a page is
// open. Views are what a page shows, computed from store objects and
// events when the page is shown, never on the controller's path: a Row
// per deployment, a Timeline of a deployment's VMs (Spans) and its
// Recoveries, and Stats over them.
//
// What the dashboard can reach is narrowed by its types: a Reader is the
// store without OpenSecrets, and Actions are the API client's Resubmit and
// Delete, the same requests `anycloud resubmit` and `anycloud delete`
// make. No page, stream or action can read a secret value.
//
// Routes, all but /login behind the session cookie:
//
//	GET  /login?ticket=T                  redeem a ticket for a session
//	GET  /                                deployments, filterable (?q=)
//	GET  /events                          rows as server-sent events
//	GET  /deployments/{name}              spec, conditions, VM timeline, events
//	GET  /deployments/{name}/live         the part of that page that refreshes
//	GET  /secretbundles                   names, key names, users, timestamps
//	GET  /credentials                     names, provider, region, how they sign in
//	GET  /sources                         GitOps directories and their last error
//	GET  /recoveries                      recoveries and reaction times, charted
//	GET  /deployments/{name}/resubmit     confirm, then POST to resubmit
//	GET  /{resource}/{name}/delete        confirm, then POST to delete (any kind)
//	GET  /static/...                      app.css, app.js
//
// Every request must name the dashboard's own host (no DNS rebinding);
// every POST must come from a same-origin page and carry the session's
// CSRF token and the confirmed object name.
package dashboard
