package dashboard

import (
	"fmt"
	"time"
)

// Chart is an SVG drawing made on the server: bars and labels as
// attributes, so that the page needs no script and no inline style (the
// Content-Security-Policy allows neither).
type Chart struct {
	Width, Height int
	Bars          []Bar
	Labels        []Label
	Lines         []Line
}

// Bar is one rectangle; Class picks its colour in app.css, Title is its
// tooltip.
type Bar struct {
	X, Y, W, H   float64
	Class, Title string
}

// Label is a piece of text.
type Label struct {
	X, Y   float64
	Text   string
	Anchor string // start, middle, end
	Class  string
}

// Line is a grid or axis line.
type Line struct{ X1, Y1, X2, Y2 float64 }

// recoveryChart draws each recent recovery as two bars: the reaction
// (preemption seen → replacement launched) in front of the total
// (→ replacement running).
func recoveryChart(recs []Recovery) Chart {
	const (
		w, h              = 720, 220
		left, right       = 56, 8
		top, bottom       = 10, 34
		plotW, plotH      = w - left - right, h - top - bottom
		minSlot, maxSlotW = 4.0, 28.0
	)
	c := Chart{Width: w, Height: h}
	var max time.Duration
	for _, r := range recs {
		max = maxDur(max, r.Total(), r.Reaction())
	}
	if len(recs) == 0 || max == 0 {
		c.Labels = append(c.Labels, Label{X: w / 2, Y: h / 2, Text: "no recoveries measured yet", Anchor: "middle", Class: "muted"})
		return c
	}
	scale := niceCeil(max)
	for i := 0; i <= 4; i++ {
		v := scale * time.Duration(i) / 4
		y := top + plotH - float64(plotH)*float64(i)/4
		c.Lines = append(c.Lines, Line{X1: left, Y1: y, X2: w - right, Y2: y})
		c.Labels = append(c.Labels, Label{X: left - 6, Y: y + 4, Text: shortDur(v), Anchor: "end", Class: "axis"})
	}
	slot := float64(plotW) / float64(len(recs))
	barW := min(slot*0.7, maxSlotW)
	if barW < minSlot {
		barW = slot
	}
	height := func(d time.Duration) float64 { return float64(plotH) * float64(d) / float64(scale) }
	for i, r := range recs {
		x := left + slot*float64(i) + (slot-barW)/2
		tip := fmt.Sprintf("%s: %s taken away %s; replacement launched after %s, running after %s",
			r.Deployment, r.VM, r.PreemptedAt.Local().Format("15:04:05"), orDash(r.Reaction()), orDash(r.Total()))
		if t := r.Total(); t > 0 {
			bh := height(t)
			c.Bars = append(c.Bars, Bar{X: x, Y: top + plotH - bh, W: barW, H: bh, Class: "total", Title: tip})
		}
		if t := r.Reaction(); t > 0 {
			bh := height(t)
			c.Bars = append(c.Bars, Bar{X: x + barW*0.2, Y: top + plotH - bh, W: barW * 0.6, H: bh, Class: "reaction", Title: tip})
		}
	}
	c.Lines = append(c.Lines, Line{X1: left, Y1: top + plotH, X2: w - right, Y2: top + plotH})
	c.Labels = append(c.Labels,
		Label{X: left, Y: h - 8, Text: recs[0].PreemptedAt.Local().Format("Jan 2 15:04"), Anchor: "start", Class: "axis"},
		Label{X: w - right, Y: h - 8, Text: recs[len(recs)-1].PreemptedAt.Local().Format("Jan 2 15:04"), Anchor: "end", Class: "axis"})
	return c
}

// countChart draws how often each deployment was recovered, one
// horizontal bar each.
func countChart(counts []Count) Chart {
	const (
		left, barH, gap = 160, 16, 6
		w               = 720
	)
	c := Chart{Width: w, Height: max(len(counts)*(barH+gap)+gap, 40)}
	most := 0
	for _, n := range counts {
		most = max(most, n.Count)
	}
	if most == 0 {
		c.Labels = append(c.Labels, Label{X: w / 2, Y: 24, Text: "no deployment has been recovered", Anchor: "middle", Class: "muted"})
		return c
	}
	plotW := float64(w - left - 48)
	for i, n := range counts {
		y := float64(gap + i*(barH+gap))
		bw := plotW * float64(n.Count) / float64(most)
		c.Labels = append(c.Labels, Label{X: left - 8, Y: y + barH - 3, Text: n.Name, Anchor: "end"})
		c.Bars = append(c.Bars, Bar{X: left, Y: y, W: max(bw, 1), H: barH, Class: "count", Title: fmt.Sprintf("%s: %d recoveries", n.Name, n.Count)})
		c.Labels = append(c.Labels, Label{X: left + bw + 6, Y: y + barH - 3, Text: fmt.Sprint(n.Count), Anchor: "start", Class: "axis"})
	}
	return c
}

// timelineChart draws a deployment's VMs on one time axis: the wait from
// request to launch, then the VM's life, ending in a mark for a
// preemption.
func timelineChart(spans []Span, now time.Time) Chart {
	const (
		w, left, right = 720, 110, 12
		rowH, gap, top = 18, 8, 8
	)
	c := Chart{Width: w, Height: top + max(len(spans), 1)*(rowH+gap) + 26}
	var from, to time.Time
	for _, s := range spans {
		for _, t := range []time.Time{s.RequestedAt, s.LaunchedAt, s.RunningAt, s.EndedAt} {
			if t.IsZero() {
				continue
			}
			if from.IsZero() || t.Before(from) {
				from = t
			}
			if t.After(to) {
				to = t
			}
		}
		if s.Current && now.After(to) {
			to = now
		}
	}
	if len(spans) == 0 || from.IsZero() {
		c.Labels = append(c.Labels, Label{X: w / 2, Y: 22, Text: "no VM yet", Anchor: "middle", Class: "muted"})
		return c
	}
	if !to.After(from) {
		to = from.Add(time.Second)
	}
	plotW := float64(w - left - right)
	x := func(t time.Time) float64 { return left + plotW*float64(t.Sub(from))/float64(to.Sub(from)) }
	for i, s := range spans {
		y := float64(top + i*(rowH+gap))
		c.Labels = append(c.Labels, Label{X: left - 8, Y: y + rowH - 4, Text: shortID(s.VM), Anchor: "end", Class: "mono"})
		if !s.RequestedAt.IsZero() && !s.LaunchedAt.IsZero() {
			c.Bars = append(c.Bars, Bar{X: x(s.RequestedAt), Y: y + 4, W: max(x(s.LaunchedAt)-x(s.RequestedAt), 1), H: rowH - 8, Class: "wait",
				Title: fmt.Sprintf("%s: launched %s after it was asked for", s.Cause, orDash(s.LaunchTook()))})
		}
		if s.LaunchedAt.IsZero() {
			continue
		}
		end := s.EndedAt
		if end.IsZero() {
			end = to
		}
		class := "vm"
		switch {
		case s.Current:
			class = "vm current"
		case len(s.End) >= 9 && s.End[:9] == "preempted":
			class = "vm preempted"
		}
		c.Bars = append(c.Bars, Bar{X: x(s.LaunchedAt), Y: y, W: max(x(end)-x(s.LaunchedAt), 2), H: rowH, Class: class,
			Title: fmt.Sprintf("VM %s (%s): launched %s, %s", s.VM, s.Cause, s.LaunchedAt.Local().Format("15:04:05.000"), orString(s.End, "running"))})
		if class == "vm preempted" {
			c.Bars = append(c.Bars, Bar{X: x(s.EndedAt) - 2, Y: y - 2, W: 4, H: rowH + 4, Class: "mark", Title: s.End})
		}
	}
	base := float64(c.Height - 18)
	c.Lines = append(c.Lines, Line{X1: left, Y1: base, X2: w - right, Y2: base})
	c.Labels = append(c.Labels,
		Label{X: left, Y: base + 14, Text: from.Local().Format("15:04:05"), Anchor: "start", Class: "axis"},
		Label{X: w - right, Y: base + 14, Text: to.Local().Format("15:04:05"), Anchor: "end", Class: "axis"})
	return c
}

func maxDur(ds ...time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

// niceCeil rounds d up to 1, 2 or 5 times a power of ten (of
// milliseconds and up), so the axis reads well.
func niceCeil(d time.Duration) time.Duration {
	step := time.Millisecond
	for {
		for _, m := range []time.Duration{1, 2, 5} {
			if d <= m*step {
				return m * step
			}
		}
		step *= 10
	}
}

// shortDur prints a duration the way a person reads a stopwatch.
func shortDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < 10*time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func orDash(d time.Duration) string {
	if d <= 0 {
		return "–"
	}
	return shortDur(d)
}

func orString(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// shortID keeps a long VM id readable on the chart's axis.
func shortID(id string) string {
	if len(id) > 14 {
		return id[:13] + "…"
	}
	if id == "" {
		return "?"
	}
	return id
}
