package dashboard

import (
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/reconcile"
	"github.com/anycloud/anycloud/state"
)

// Row is one deployment as the list shows it, and as the event stream
// sends it. It holds no env and no secret: only what `anycloud status`
// prints in its columns, the labels (for the filter) and Ready's reason and
// message (conditions never carry a secret value).
type Row struct {
	Name            string            `json:"name"`
	Phase           string            `json:"phase"`
	Ready           string            `json:"ready"`
	Reason          string            `json:"reason,omitempty"`
	Message         string            `json:"message,omitempty"`
	VM              string            `json:"vm,omitempty"`
	Market          string            `json:"market,omitempty"`
	Address         string            `json:"address,omitempty"`
	Recoveries      int               `json:"recoveries"`
	Bundles         []string          `json:"bundles,omitempty"`
	Labels          map[string]string `json:"labels,omitempty"`
	Created         time.Time         `json:"created"`
	ResourceVersion string            `json:"resourceVersion"`
}

// RowOf is the list's view of d.
func RowOf(d *manifests.Deployment) Row {
	r := Row{
		Name:            d.Metadata.Name,
		Phase:           phaseOf(d),
		Ready:           manifests.ConditionUnknown,
		Recoveries:      d.Status.Recoveries,
		Bundles:         d.Spec.Secrets,
		Labels:          d.Metadata.Labels,
		Created:         d.Metadata.CreationTimestamp,
		ResourceVersion: d.Metadata.ResourceVersion,
	}
	if c := manifests.FindCondition(d.Status.Conditions, manifests.ConditionReady); c != nil {
		r.Ready, r.Reason, r.Message = c.Status, c.Reason, c.Message
	}
	if vm := d.Status.VM; vm != nil {
		r.VM, r.Market, r.Address = vm.ID, vm.Market, vm.Address
	}
	return r
}

func phaseOf(d *manifests.Deployment) string {
	switch {
	case d.Metadata.DeletionTimestamp != nil:
		return manifests.PhaseTerminating
	case d.Status.Phase != "":
		return d.Status.Phase
	}
	return manifests.PhasePending
}

// matches reports whether a row passes the list's filter: every word of q
// must appear in the name, phase, Ready, VM, market, address, a bundle or
// a label (key=value), ignoring case. The page's script applies the same
// rule as the user types.
func (r Row) matches(q string) bool {
	hay := strings.ToLower(strings.Join(r.haystack(), " "))
	for _, w := range strings.Fields(strings.ToLower(q)) {
		if !strings.Contains(hay, w) {
			return false
		}
	}
	return true
}

func (r Row) haystack() []string {
	h := []string{r.Name, r.Phase, "ready=" + r.Ready, r.VM, r.Market, r.Address}
	h = append(h, r.Bundles...)
	for k, v := range r.Labels {
		h = append(h, k+"="+v)
	}
	return h
}

// Span is one VM in a deployment's life, rebuilt from its events: why it
// was asked for, when it launched and ran, and how it ended. Zero times are
// unknown (an event older than the store keeps, a VM still running).
type Span struct {
	VM      string
	Attempt int
	Market  string
	// Cause is why the VM was made: first launch, recovery, resubmit,
	// spec change, adopted.
	Cause string
	// RequestedAt is when the VM was asked for: the deployment's creation,
	// the preemption it replaces, the resubmit.
	RequestedAt time.Time
	LaunchedAt  time.Time
	// RunningAt is when the VM was seen running (the Recovered event of a
	// replacement; Ready for the current VM).
	RunningAt time.Time
	EndedAt   time.Time
	// End says how it ended: "preempted: …", "replaced: …", "terminated".
	End     string
	Current bool
}

// LaunchTook is from the request to the launched VM.
func (s Span) LaunchTook() time.Duration { return between(s.RequestedAt, s.LaunchedAt) }

// RunningTook is from the request to the VM seen running.
func (s Span) RunningTook() time.Duration { return between(s.RequestedAt, s.RunningAt) }

// Lived is from launch to the end, or to now for a live VM.
func (s Span) Lived(now time.Time) time.Duration {
	if s.EndedAt.IsZero() {
		if s.Current {
			return between(s.LaunchedAt, now)
		}
		return 0
	}
	return between(s.LaunchedAt, s.EndedAt)
}

// Recovery is one preemption and its replacement.
type Recovery struct {
	Deployment string
	// VM was taken away; Replacement took its place.
	VM, Replacement string
	Reason          string
	PreemptedAt     time.Time
	// LaunchedAt: the replacement was launched; RunningAt: it was seen
	// running.
	LaunchedAt, RunningAt time.Time
}

// Reaction is from the preemption seen to the replacement launched.
func (r Recovery) Reaction() time.Duration { return between(r.PreemptedAt, r.LaunchedAt) }

// Total is from the preemption seen to the replacement running.
func (r Recovery) Total() time.Duration { return between(r.PreemptedAt, r.RunningAt) }

func between(a, b time.Time) time.Duration {
	if a.IsZero() || b.IsZero() || b.Before(a) {
		return 0
	}
	return b.Sub(a)
}

var (
	reVM      = regexp.MustCompile(`\bVM ([^\s:,()]+)`)
	reAttempt = regexp.MustCompile(`\battempt (\d+)`)
	reMarket  = regexp.MustCompile(`\(attempt \d+, ([^),]+)\)`)
)

// Timeline rebuilds d's VMs and recoveries from its events (oldest first).
// It reads the controller's event reasons (package reconcile's constants)
// and the VM id each message names; an event it does not know is skipped.
func Timeline(d *manifests.Deployment, evs []state.Event) ([]Span, []Recovery) {
	var (
		spans []Span
		recs  []Recovery
		// pending is the request for the next VM: when and why.
		pendingAt    time.Time
		pendingCause string
	)
	find := func(id string) *Span {
		for i := len(spans) - 1; i >= 0; i-- {
			if spans[i].VM == id {
				return &spans[i]
			}
		}
		return nil
	}
	end := func(id string, at time.Time, how string) {
		if s := find(id); s != nil && s.End == "" {
			s.EndedAt, s.End = at, how
		}
	}
	lastRec := func(replacement string) *Recovery {
		for i := len(recs) - 1; i >= 0; i-- {
			if recs[i].Replacement == replacement || (replacement == "" && recs[i].Replacement == "") {
				return &recs[i]
			}
		}
		return nil
	}
	for _, ev := range evs {
		at := ev.FirstSeen
		id := submatch(reVM, ev.Message)
		switch ev.Reason {
		case reconcile.ReasonLaunched:
			attempt, _ := strconv.Atoi(submatch(reAttempt, ev.Message))
			s := Span{VM: id, Attempt: attempt, Market: submatch(reMarket, ev.Message), LaunchedAt: at, Cause: pendingCause, RequestedAt: pendingAt}
			recovery := strings.Contains(ev.Message, "replacement")
			switch {
			case recovery:
				s.Cause = "recovery"
			case s.Cause == "" && attempt == 1:
				s.Cause, s.RequestedAt = "first launch", d.Metadata.CreationTimestamp
			case s.Cause == "":
				s.Cause = "launch"
			}
			// A launch retried with the same attempt names the same VM.
			if prev := find(id); prev != nil && id != "" {
				prev.LaunchedAt = at
				continue
			}
			spans = append(spans, s)
			if r := lastRec(""); recovery && r != nil {
				r.Replacement, r.LaunchedAt = id, at
			}
			pendingAt, pendingCause = time.Time{}, ""
		case reconcile.ReasonPreempted:
			reason := ev.Message
			if _, after, ok := strings.Cut(ev.Message, ": "); ok {
				reason = after
			}
			end(id, at, "preempted: "+reason)
			recs = append(recs, Recovery{Deployment: d.Metadata.Name, VM: id, Reason: reason, PreemptedAt: at})
			pendingAt, pendingCause = at, "recovery"
		case reconcile.ReasonRecovered:
			if s := find(id); s != nil && s.RunningAt.IsZero() {
				s.RunningAt = at
			}
			if r := lastRec(id); r != nil && r.RunningAt.IsZero() {
				r.RunningAt = at
			}
		case reconcile.ReasonReplacing:
			why := "replaced"
			if _, after, ok := strings.Cut(ev.Message, ": "); ok {
				why = after
			}
			end(id, at, "replaced: "+why)
			cause := why
			if why == "resubmitted" {
				cause = "resubmit"
			} else if strings.Contains(why, "spec") {
				cause = "spec change"
			}
			pendingAt, pendingCause = at, cause
		case reconcile.ReasonTerminating:
			end(id, at, "terminated")
		case reconcile.ReasonTerminated:
			end(id, at, "deleted")
		case reconcile.ReasonAdopted:
			if find(id) == nil {
				spans = append(spans, Span{VM: id, Cause: "adopted after a restart", LaunchedAt: at})
			}
		}
	}
	if vm := d.Status.VM; vm != nil {
		if s := find(vm.ID); s != nil {
			s.Current = true
			if s.Market == "" {
				s.Market = vm.Market
			}
			ready := manifests.FindCondition(d.Status.Conditions, manifests.ConditionReady)
			if s.RunningAt.IsZero() && ready != nil && ready.Status == manifests.ConditionTrue && !ready.LastTransitionTime.Before(s.LaunchedAt) {
				s.RunningAt = ready.LastTransitionTime
			}
		}
	}
	return spans, recs
}

func submatch(re *regexp.Regexp, s string) string {
	if m := re.FindStringSubmatch(s); m != nil {
		return m[1]
	}
	return ""
}

// Stats summarises recoveries for the chart page.
type Stats struct {
	Count int
	// Reaction: preemption seen → replacement launched; Total: →
	// replacement running. Measured counts the recoveries each was
	// measured on.
	ReactionP50, ReactionMax  time.Duration
	TotalP50, TotalMax        time.Duration
	Measured, MeasuredRunning int
	// Recent are the last recoveries, oldest first.
	Recent []Recovery
	// ByDeployment are the most recovered deployments, most first.
	ByDeployment []Count
}

// Count is how often a deployment was recovered.
type Count struct {
	Name  string
	Count int
}

// maxRecent is how many recoveries the chart draws.
const maxRecent = 40

func statsOf(recs []Recovery, counts []Count) Stats {
	st := Stats{Count: len(recs)}
	sort.Slice(recs, func(i, j int) bool { return recs[i].PreemptedAt.Before(recs[j].PreemptedAt) })
	var reactions, totals []time.Duration
	for _, r := range recs {
		if d := r.Reaction(); d > 0 {
			reactions = append(reactions, d)
		}
		if d := r.Total(); d > 0 {
			totals = append(totals, d)
		}
	}
	st.Measured, st.MeasuredRunning = len(reactions), len(totals)
	st.ReactionP50, st.ReactionMax = p50max(reactions)
	st.TotalP50, st.TotalMax = p50max(totals)
	if len(recs) > maxRecent {
		recs = recs[len(recs)-maxRecent:]
	}
	st.Recent = recs
	slices.SortFunc(counts, func(a, b Count) int {
		if a.Count != b.Count {
			return b.Count - a.Count
		}
		return strings.Compare(a.Name, b.Name)
	})
	if len(counts) > 20 {
		counts = counts[:20]
	}
	st.ByDeployment = counts
	return st
}

func p50max(ds []time.Duration) (time.Duration, time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return ds[(len(ds)-1)/2], ds[len(ds)-1]
}
