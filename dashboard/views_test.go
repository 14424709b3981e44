package dashboard

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/reconcile"
	"github.com/anycloud/anycloud/state"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func ev(ms int, reason, msg string) state.Event {
	return state.Event{Type: "Normal", Reason: reason, Message: msg, Count: 1, FirstSeen: at(ms), LastSeen: at(ms)}
}

func deployment(vm string, readyAt int) *manifests.Deployment {
	d := &manifests.Deployment{Metadata: manifests.ObjectMeta{Name: "web", CreationTimestamp: at(0)}}
	if vm != "" {
		d.Status.VM = &manifests.VMStatus{ID: vm, Market: "local"}
		d.Status.Conditions = []manifests.Condition{{Type: manifests.ConditionReady, Status: manifests.ConditionTrue, LastTransitionTime: at(readyAt)}}
	}
	return d
}

// The messages are the controller's own (package reconcile and
// controller): the timeline reads their reasons and the VM each names.
func TestTimelineRebuildsLaunchPreemptionRecoveryAndResubmit(t *testing.T) {
	evs := []state.Event{
		ev(400, reconcile.ReasonLaunched, "launched VM aaa (attempt 1, local) with bundles demo@1"),
		ev(60_000, reconcile.ReasonPreempted, "VM aaa was taken away: exited (137)"),
		ev(60_000, reconcile.ReasonRecovering, "launching attempt 2 with freshly resolved secrets"),
		ev(60_350, reconcile.ReasonLaunched, "launched replacement VM bbb (attempt 2, local) with bundles demo@1"),
		ev(61_100, reconcile.ReasonRecovered, "replacement VM bbb is running"),
		ev(120_000, reconcile.ReasonReplacing, "replacing VM bbb: resubmitted"),
		ev(120_300, reconcile.ReasonLaunched, "launched VM ccc (attempt 3, local) with bundles demo@2"),
		ev(120_310, reconcile.ReasonTerminating, "terminating VM bbb"),
		ev(120_500, "SomethingNew", "VM zzz did a thing the dashboard does not know"),
	}
	spans, recs := Timeline(deployment("ccc", 121_000), evs)
	want := []Span{
		{VM: "aaa", Attempt: 1, Market: "local", Cause: "first launch", RequestedAt: at(0), LaunchedAt: at(400), EndedAt: at(60_000), End: "preempted: exited (137)"},
		{VM: "bbb", Attempt: 2, Market: "local", Cause: "recovery", RequestedAt: at(60_000), LaunchedAt: at(60_350), RunningAt: at(61_100), EndedAt: at(120_000), End: "replaced: resubmitted"},
		{VM: "ccc", Attempt: 3, Market: "local", Cause: "resubmit", RequestedAt: at(120_000), LaunchedAt: at(120_300), RunningAt: at(121_000), Current: true},
	}
	if diff := cmp.Diff(want, spans); diff != "" {
		t.Errorf("spans (-want +got):\n%s", diff)
	}
	wantRecs := []Recovery{{Deployment: "web", VM: "aaa", Replacement: "bbb", Reason: "exited (137)", PreemptedAt: at(60_000), LaunchedAt: at(60_350), RunningAt: at(61_100)}}
	if diff := cmp.Diff(wantRecs, recs); diff != "" {
		t.Errorf("recoveries (-want +got):\n%s", diff)
	}
	if got := recs[0].Reaction(); got != 350*time.Millisecond {
		t.Errorf("reaction = %s, want 350ms", got)
	}
	if got := recs[0].Total(); got != 1100*time.Millisecond {
		t.Errorf("total = %s, want 1.1s", got)
	}
	if got := spans[0].LaunchTook(); got != 400*time.Millisecond {
		t.Errorf("first launch took %s, want 400ms", got)
	}
	if got := spans[2].Lived(at(180_000)); got != time.Minute-300*time.Millisecond {
		t.Errorf("current VM lived %s", got)
	}
}

func TestTimelineCases(t *testing.T) {
	for _, tc := range []struct {
		name  string
		d     *manifests.Deployment
		evs   []state.Event
		spans int
		recs  int
		check func(t *testing.T, spans []Span, recs []Recovery)
	}{
		{
			name: "no events: no VM yet",
			d:    deployment("", 0),
		},
		{
			// The store keeps the last 50 events: a recovery whose
			// preemption fell off still shows its VM, with no request time.
			name:  "events cut off before the launch",
			d:     deployment("bbb", 5_000),
			evs:   []state.Event{ev(4_000, reconcile.ReasonLaunched, "launched replacement VM bbb (attempt 7, spot)")},
			spans: 1,
			check: func(t *testing.T, spans []Span, _ []Recovery) {
				if s := spans[0]; !s.RequestedAt.IsZero() || s.LaunchTook() != 0 || s.Market != "spot" || !s.Current || s.RunningAt != at(5_000) {
					t.Errorf("span = %+v", s)
				}
			},
		},
		{
			name: "a launch retried with the same attempt is one VM",
			d:    deployment("aaa", 2_000),
			evs: []state.Event{
				ev(500, reconcile.ReasonLaunched, "launched VM aaa (attempt 1, local)"),
				ev(900, reconcile.ReasonLaunched, "launched VM aaa (attempt 1, local)"),
			},
			spans: 1,
		},
		{
			name: "a preemption still recovering has no replacement yet",
			d:    deployment("", 0),
			evs: []state.Event{
				ev(500, reconcile.ReasonLaunched, "launched VM aaa (attempt 1, on-demand)"),
				ev(9_000, reconcile.ReasonPreempted, "VM aaa was taken away: instance-terminated-no-capacity"),
				ev(9_000, reconcile.ReasonRecoveryBackOff, "VM died 3 times soon after launch; next attempt in 5s"),
			},
			spans: 1,
			recs:  1,
			check: func(t *testing.T, _ []Span, recs []Recovery) {
				if r := recs[0]; r.Replacement != "" || r.Reaction() != 0 || r.Reason != "instance-terminated-no-capacity" {
					t.Errorf("recovery = %+v", r)
				}
			},
		},
		{
			name: "adopted after a control plane restart",
			d:    deployment("aaa", 3_000),
			evs:  []state.Event{ev(2_000, reconcile.ReasonAdopted, "found VM aaa of attempt 1 running; adopted it")},
			check: func(t *testing.T, spans []Span, _ []Recovery) {
				if spans[0].Cause != "adopted after a restart" {
					t.Errorf("cause = %q", spans[0].Cause)
				}
			},
			spans: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spans, recs := Timeline(tc.d, tc.evs)
			if len(spans) != tc.spans || len(recs) != tc.recs {
				t.Fatalf("%d spans, %d recoveries; want %d, %d: %+v %+v", len(spans), len(recs), tc.spans, tc.recs, spans, recs)
			}
			if tc.check != nil {
				tc.check(t, spans, recs)
			}
		})
	}
}

func TestStatsP50AndMax(t *testing.T) {
	rec := func(start, launched, running int) Recovery {
		return Recovery{PreemptedAt: at(start), LaunchedAt: at(launched), RunningAt: at(running)}
	}
	st := statsOf([]Recovery{rec(3000, 3400, 4000), rec(1000, 1100, 1500), rec(2000, 2900, 0)}, []Count{{"a", 1}, {"b", 2}})
	if st.Count != 3 || st.Measured != 3 || st.MeasuredRunning != 2 {
		t.Errorf("counts: %+v", st)
	}
	if st.ReactionP50 != 400*time.Millisecond || st.ReactionMax != 900*time.Millisecond {
		t.Errorf("reaction p50 %s max %s", st.ReactionP50, st.ReactionMax)
	}
	if st.TotalP50 != 500*time.Millisecond || st.TotalMax != time.Second {
		t.Errorf("total p50 %s max %s", st.TotalP50, st.TotalMax)
	}
	if st.Recent[0].PreemptedAt != at(1000) {
		t.Errorf("recent not oldest first: %+v", st.Recent)
	}
	if st.ByDeployment[0].Name != "b" {
		t.Errorf("by deployment not most first: %+v", st.ByDeployment)
	}
}

func TestRowFilter(t *testing.T) {
	r := Row{Name: "train-7", Phase: "Recovering", Ready: "False", VM: "i-0abc", Market: "spot", Bundles: []string{"hf"}, Labels: map[string]string{"team": "ml"}}
	for q, want := range map[string]bool{
		"":                 true,
		"train":            true,
		"TRAIN recover":    true,
		"team=ml":          true,
		"ready=false spot": true,
		"hf":               true,
		"ready=true":       false,
		"web":              false,
	} {
		if got := r.matches(q); got != want {
			t.Errorf("matches(%q) = %v, want %v", q, got, want)
		}
	}
}

func TestAuthTicketWorksOnceAndExpires(t *testing.T) {
	now := t0
	a := newAuth(func() time.Time { return now })
	tk, exp := a.mintTicket()
	if exp != now.Add(TicketTTL) {
		t.Errorf("expiry %s", exp)
	}
	cookie, ok := a.redeem(tk)
	if !ok || a.lookup(cookie) == nil {
		t.Fatal("a fresh ticket did not sign in")
	}
	if _, ok := a.redeem(tk); ok {
		t.Error("a ticket worked twice")
	}
	late, _ := a.mintTicket()
	now = now.Add(TicketTTL)
	if _, ok := a.redeem(late); ok {
		t.Error("an expired ticket worked")
	}
	if a.lookup("") != nil || a.lookup("made-up") != nil {
		t.Error("a made-up cookie names a session")
	}
	now = now.Add(SessionTTL)
	if a.lookup(cookie) != nil {
		t.Error("a session outlived SessionTTL")
	}
}

func TestAuthIsBounded(t *testing.T) {
	a := newAuth(time.Now)
	first, _ := a.mintTicket()
	for range maxTickets {
		a.mintTicket()
	}
	if _, ok := a.redeem(first); ok {
		t.Error("the oldest ticket was kept past the bound")
	}
	var cookies []string
	for range maxSessions + 1 {
		tk, _ := a.mintTicket()
		c, _ := a.redeem(tk)
		cookies = append(cookies, c)
	}
	if len(a.sessions) != maxSessions {
		t.Errorf("%d sessions kept, want at most %d", len(a.sessions), maxSessions)
	}
	if a.lookup(cookies[len(cookies)-1]) == nil {
		t.Error("the newest session was evicted")
	}
}
