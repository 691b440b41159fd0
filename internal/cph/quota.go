package cph

import (
	"errors"
	"math"
	"regexp"
	"strconv"
	"time"
)

// Quota is the throttling threshold the API gateway names in a 429:
// Limit calls per Period.
type Quota struct {
	Limit  float64
	Period time.Duration // time.Second or time.Minute
}

// PerSecond returns the quota in calls per second.
func (q Quota) PerSecond() float64 { return q.Limit / q.Period.Seconds() }

// quotaRe matches the gateway's wording, "…,limit:10,time:1 second" or
// "…limit:600,time:1 minute" (APIGW.0308 and the older APIG.0308).
var quotaRe = regexp.MustCompile(`limit:\s*([0-9]+(?:\.[0-9]+)?)\s*,\s*time:\s*1\s*(second|minute)`)

// QuotaOf returns the quota a throttling error names, as in
// "The throttling threshold has been reached: policy user over
// ratelimit,limit:10,time:1 second". ok is false when err is not a
// throttling *Error or its message names no usable quota.
func QuotaOf(err error) (q Quota, ok bool) {
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindThrottled {
		return Quota{}, false
	}
	m := quotaRe.FindStringSubmatch(e.Message)
	if m == nil {
		return Quota{}, false
	}
	n, perr := strconv.ParseFloat(m[1], 64)
	if perr != nil || !(n > 0) || math.IsInf(n, 0) {
		return Quota{}, false
	}
	q = Quota{Limit: n, Period: time.Second}
	if m[2] == "minute" {
		q.Period = time.Minute
	}
	return q, true
}

// QuotaPerSecond returns the quota a throttling error names in calls per
// second, or 0 when it names none (see QuotaOf).
func QuotaPerSecond(err error) float64 {
	if q, ok := QuotaOf(err); ok {
		return q.PerSecond()
	}
	return 0
}
