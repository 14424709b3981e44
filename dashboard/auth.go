package dashboard

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"sync"
	"time"
)

// Lifetimes and bounds of the sign-in state. Everything lives in memory: a
// restarted control plane forgets every session, and `anycloud dashboard`
// mints a new ticket.
const (
	// TicketTTL is how long a ticket may wait to be redeemed. It is short
	// because a ticket travels in a URL.
	TicketTTL = 2 * time.Minute
	// SessionTTL is how long a session lasts after sign-in.
	SessionTTL = 12 * time.Hour
	// maxTickets and maxSessions bound memory: past them the oldest goes.
	maxTickets  = 32
	maxSessions = 64
)

// digest is the SHA-256 of a token. Tokens are kept and looked up by
// digest, so that neither a map lookup's timing nor a memory dump gives
// one away.
type digest [sha256.Size]byte

func digestOf(token string) digest { return sha256.Sum256([]byte(token)) }

// newToken returns 32 random bytes, base64url-encoded.
func newToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand since Go 1.24)
	return base64.RawURLEncoding.EncodeToString(b)
}

// session is one signed-in browser.
type session struct {
	// csrf is posted back by every form of the session.
	csrf    string
	expires time.Time
}

// validCSRF compares in constant time.
func (s *session) validCSRF(token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(s.csrf)) == 1
}

// auth holds the tickets not yet redeemed and the live sessions.
type auth struct {
	now func() time.Time

	mu       sync.Mutex
	tickets  map[digest]time.Time // → expiry
	sessions map[digest]*session
}

func newAuth(now func() time.Time) *auth {
	return &auth{now: now, tickets: map[digest]time.Time{}, sessions: map[digest]*session{}}
}

// mintTicket returns a new one-time ticket and when it expires.
func (a *auth) mintTicket() (string, time.Time) {
	t := newToken()
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	a.expireLocked(now)
	if len(a.tickets) >= maxTickets {
		evictOldest(a.tickets, func(exp time.Time) time.Time { return exp })
	}
	exp := now.Add(TicketTTL)
	a.tickets[digestOf(t)] = exp
	return t, exp
}

// redeem spends a ticket and opens a session. It returns the session's
// cookie value, or false when the ticket is unknown, spent or expired.
func (a *auth) redeem(ticket string) (string, bool) {
	if ticket == "" {
		return "", false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	a.expireLocked(now)
	d := digestOf(ticket)
	if _, ok := a.tickets[d]; !ok {
		return "", false
	}
	delete(a.tickets, d)
	if len(a.sessions) >= maxSessions {
		evictOldest(a.sessions, func(s *session) time.Time { return s.expires })
	}
	cookie := newToken()
	a.sessions[digestOf(cookie)] = &session{csrf: newToken(), expires: now.Add(SessionTTL)}
	return cookie, true
}

// lookup returns the live session a cookie names, or nil.
func (a *auth) lookup(cookie string) *session {
	if cookie == "" {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.sessions[digestOf(cookie)]
	if s == nil || !a.now().Before(s.expires) {
		return nil
	}
	return s
}

// expireLocked drops expired tickets and sessions; a.mu is held.
func (a *auth) expireLocked(now time.Time) {
	for d, exp := range a.tickets {
		if !now.Before(exp) {
			delete(a.tickets, d)
		}
	}
	for d, s := range a.sessions {
		if !now.Before(s.expires) {
			delete(a.sessions, d)
		}
	}
}

func evictOldest[V any](m map[digest]V, expiry func(V) time.Time) {
	var (
		oldest digest
		at     time.Time
		found  bool
	)
	for d, v := range m {
		if e := expiry(v); !found || e.Before(at) {
			oldest, at, found = d, e, true
		}
	}
	if found {
		delete(m, oldest)
	}
}
