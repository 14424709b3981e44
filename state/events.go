package state

import (
	"context"
	"encoding/json"
	"time"

	"github.com/anycloud/anycloud/manifests"
)

// Events: the last few things that happened to an object, kept beside
// it and removed with it.

// maxEvents is how many events are kept per object.
const maxEvents = 50

// addEvent merges ev into an object's list of events (JSON, nil when
// none): a repeat of the last one bumps its count.
func addEvent(old []byte, ev Event, now time.Time) ([]byte, error) {
	var list []Event
	if old != nil {
		if err := json.Unmarshal(old, &list); err != nil {
			return nil, err
		}
	}
	if n := len(list); n > 0 && list[n-1].Type == ev.Type && list[n-1].Reason == ev.Reason && list[n-1].Message == ev.Message {
		list[n-1].Count++
		list[n-1].LastSeen = now
	} else {
		ev.Count, ev.FirstSeen, ev.LastSeen = 1, now, now
		list = append(list, ev)
		if len(list) > maxEvents {
			list = list[len(list)-maxEvents:]
		}
	}
	return json.Marshal(list)
}

// Events implements Store.
func (s *core) Events(ctx context.Context, ref manifests.ObjectRef) ([]Event, error) {
	var list []Event
	_, err := s.be.view(ctx, func(tx kvReader) error {
		v, _, err := tx.get(bucketEvents, sealedKey(ref.Kind, ref.Name))
		if err != nil || v == nil {
			return err
		}
		return json.Unmarshal(v, &list)
	})
	return list, err
}
