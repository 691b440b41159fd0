package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cph-rekey/cph-rekey/rekey"
)

func cmdRetire(ctx context.Context, args []string, e *env) error {
	f := newFlags(e, "retire", "ROTATION",
		"Retires ROTATION's old keypairs: deletes each server's keypair from before the rotation (from its\n"+
			"report) from the KPS of every (region, project) the rotation touched, but only where that\n"+
			"project's server list, read back whole, shows no server still on it; never a keypair the rotation\n"+
			"puts servers on. Prints what was deleted and what was kept, and why. A keypair already gone counts\n"+
			"as deleted, so running it again finishes an interrupted retire. Once a keypair is deleted, rollback\n"+
			"refuses the rotation. The credentials need cph:servers:list and "+rekey.KeypairDeleteAction+".")
	dryRun := f.Bool("dry-run", false, "read the fleet and print what would be deleted and kept; delete nothing, record nothing")
	after := f.Duration("after", 0, "schedule the retire instead: the workers run it after this `duration` (asynq task retire-ROTATION,\non the submit queue); 'enqueue status' shows its outcome. Scheduling it again changes nothing")
	allow := f.Bool("allow-incomplete", false, "retire a rotation that did not succeed (completed with errors, failed or cancelled); its servers\nstill on an old keypair keep it anyway")
	asJSON := f.Bool("json", false, "print the outcome as JSON")
	region := f.String("region", "", "default CPH `region`: the region of a rotation whose targets named none")
	var endpoints []string
	f.Func("endpoint", "CPH endpoint: a plain `url` overrides --region's; REGION=URL sets another region's, before the SDK's\nHUAWEICLOUD_SDK_REGION_CPH_{REGION} (repeat the flag, or separate with commas in the variable)", func(v string) error {
		for _, ep := range strings.Split(v, ",") {
			if ep = strings.TrimSpace(ep); ep != "" {
				endpoints = append(endpoints, ep)
			}
		}
		return nil
	})
	kpsEndpoint := f.String("kps-endpoint", "", "Key Pair Service endpoint `url` of --region. Default: the SDK's HUAWEICLOUD_SDK_REGION_KPS_{REGION}\nwhen set, else the region's CPH endpoint when given, else https://kms.{region}.myhuaweicloud.com")
	readRate := f.String("read-rate", "20/s:5", "`rate` of this command's reads of the fleet (ListCloudPhoneServers pages), like the workers' --read-rate")
	f.addActor()
	if err := f.parse(args, 1); err != nil {
		return err
	}
	id, err := f.rotationArg()
	if err != nil {
		return err
	}
	if ctx, err = f.withActor(ctx); err != nil {
		return err
	}
	opts := rekey.RetireOptions{DryRun: *dryRun, AllowIncomplete: *allow}
	if *after != 0 {
		if *after < 0 {
			return usagef("--after %s: want a positive duration", *after)
		}
		if *dryRun {
			return usagef("--dry-run runs now: drop --after to see what a retire would do")
		}
		rdb, c, err := f.connect(rekey.Options{})
		if err != nil {
			return err
		}
		defer rdb.Close()
		s, err := c.ScheduleRetire(ctx, id, *after, opts)
		if err != nil {
			return usage(err)
		}
		return printScheduled(e.stdout, *asJSON, id, s)
	}
	plain, perRegion, err := rekey.ParseEndpoints(endpoints)
	if err != nil {
		return usagef("--endpoint: %v", err)
	}
	if *region == "" && plain == "" {
		return usagef("retire reads the fleet and KPS: set --region or --endpoint (or schedule it on the workers with --after)")
	}
	rr, err := rekey.ParseRate(*readRate)
	if err != nil {
		return usagef("--read-rate: %v", err)
	}
	cph := rekey.CPHFromEnv(e.getenv)
	cph.Region, cph.Endpoint, cph.Endpoints, cph.KPSEndpoint = *region, plain, perRegion, *kpsEndpoint
	rdb, c, err := f.connect(rekey.Options{CPH: cph, ReadRate: rr})
	if err != nil {
		return err
	}
	defer rdb.Close()
	r, err := c.Retire(ctx, id, opts)
	if err != nil {
		if r != nil && len(r.Places) > 0 {
			// What was done before the error is stored; say it too.
			writeRetirement(e.stderr, r, "")
		}
		return usage(err)
	}
	if *asJSON {
		return json.NewEncoder(e.stdout).Encode(r)
	}
	writeRetirement(e.stdout, r, "")
	return nil
}

func printScheduled(w io.Writer, asJSON bool, id string, s *rekey.ScheduledRetire) error {
	if asJSON {
		return json.NewEncoder(w).Encode(map[string]any{"rotation": id, "scheduled": s.Scheduled, "due": s.Due, "task_id": s.TaskID})
	}
	if !s.Scheduled {
		_, err := fmt.Fprintf(w, "retire of %s already scheduled for %s (task %s): left as it is\n", id, s.Due.Format(time.RFC3339), s.TaskID)
		return err
	}
	_, err := fmt.Fprintf(w, "retire of %s scheduled for %s (task %s)\n", id, s.Due.Format(time.RFC3339), s.TaskID)
	return err
}

// writeRetirement writes what a retire did, a line a keypair, each line
// starting with indent.
func writeRetirement(w io.Writer, r *rekey.Retirement, indent string) {
	deleted, kept := "deleted", "kept"
	if r.DryRun {
		deleted, kept = "would delete", "would keep"
		fmt.Fprintf(w, "%sdry run of the retire of %s: nothing deleted, nothing recorded\n", indent, r.Rotation)
	}
	for _, p := range r.Places {
		where := orDefault(p.Region, "(default region)") + "/" + orDefault(p.ProjectID, "(default project)")
		for _, d := range p.Deleted {
			gone := ""
			if d.AlreadyGone {
				gone = " (already gone)"
			}
			fmt.Fprintf(w, "%s%s %s in %s%s\n", indent, deleted, d.Keypair, where, gone)
		}
		for _, k := range p.Kept {
			fmt.Fprintf(w, "%s%s %s in %s: %s\n", indent, kept, k.Keypair, where, k)
		}
		if len(p.Deleted)+len(p.Kept) == 0 {
			fmt.Fprintf(w, "%sno old keypair to retire in %s\n", indent, where)
		}
		if p.Unrecorded > 0 {
			fmt.Fprintf(w, "%s%d servers in %s have no recorded old keypair (started with --skip-matching=false): their old keypairs are not retired\n",
				indent, p.Unrecorded, where)
		}
	}
}
