// Package github signs anycloud in to GitHub and keeps the token it gets.
//
// There are only a few things in github: a Client, a DeviceCode, a Token,
// a User and a Login.
//
//   - A Client talks to one GitHub: its web host (WebURL, where the OAuth
//     device flow and git live; https://github.com by default) and its API
//     host (APIURL; https://api.github.com). Both are configurable for
//     GitHub Enterprise and for tests, as is the OAuth app's ClientID.
//   - A DeviceCode is the first step of GitHub's OAuth device flow
//     (RFC 8628): a short UserCode the person types at VerificationURI,
//     and a device code the client polls with. PollToken polls at the
//     interval GitHub asks for, slows down by five seconds at every
//     slow_down, and ends with a Token, ErrAccessDenied or ErrExpired.
//   - A User is who a token belongs to, with the scopes GitHub reports for
//     it in the X-OAuth-Scopes header of GET /user.
//   - A Login is what `anycloud login` keeps: the token, the user it
//     belongs to, the hosts it was issued by and the container registries
//     it may be sent to. Save seals it with the control plane's cipher key
//     (package seal) into $ANYCLOUD_HOME/.token, mode 0600; it is never
//     at rest in plaintext. Load opens it; Remove deletes it.
//
// A token never appears in an error, a log line or a String form: Token
// and Login print as redacted.
package github
