// Package ratelimit is the fleet-wide rate limiter in front of the CPH API:
// however many worker processes run, together they call one API of one
// project in one region at no more than its configured rate, and they use
// all of it.
//
//	lim, err := ratelimit.New(rdb, ratelimit.Options{
//		Limits: map[string]ratelimit.Limit{"UpdateKeypair": ratelimit.PerSecond(10)},
//	})
//	k := ratelimit.Key{Region: "cn-east-3", Project: projectID, API: "UpdateKeypair"}
//	if err := lim.Wait(ctx, k); err != nil {
//		return err // a *DelayError puts the task back without a failure
//	}
//	resp, err := client.UpdateKeypair(ctx, req)
//	if cph.IsThrottled(err) {
//		lim.ThrottledQuota(ctx, k, cph.RetryAfter(err), cph.QuotaPerSecond(err))
//	}
//
// Grants come from GCRA in a Lua script on Redis's clock (the algorithm
// and epoch of github.com/go-redis/redis_rate), one round trip each. The
// rate itself lives in Redis and adapts to the quota, fleet-wide: a 429
// that names a quota below the rate sets the rate just under it at once;
// an isolated 429 costs a short pause every process honours; 429s that
// keep coming cut it by Beta and remember the rate they came at, which the
// rate returns to just under within seconds (CUBIC, as the AWS SDK's
// adaptive retry mode). After a hold the rate probes above the estimate,
// so a quota that comes back is used again. Inside a process a token
// bucket from golang.org/x/time/rate, following the shared rate, spaces the
// calls to Redis, so waiting goroutines sleep rather than poll.
//
// The limiter fails closed: when Redis is unreachable, Wait returns a
// *DelayError with a backoff that grows with consecutive failures, and no
// call reaches the API.
package ratelimit
