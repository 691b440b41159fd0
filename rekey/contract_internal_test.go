package rekey

import (
	"testing"

	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// TestConstantsMatchThePipeline: the public constants are written out (so
// go doc shows them), and must stay what the pipeline uses.
func TestConstantsMatchThePipeline(t *testing.T) {
	tests := []struct {
		name      string
		got, want any
	}{
		{"EventQueue", EventQueue, tasks.QueueEvents},
		{"EventTaskType", EventTaskType, tasks.TypeFinished},
		{"EventVersion", EventVersion, tasks.EventVersion},
		{"ReportRowVersion", ReportRowVersion, tasks.ReportRowVersion},
		{"MaxChunkSize", MaxChunkSize, tasks.MaxChunkSize},
		{"DefaultChunkSize", DefaultChunkSize, tasks.DefaultChunkSize},
		{"DefaultMaxAttempts", DefaultMaxAttempts, tasks.DefaultMaxAttempts},
		{"DefaultMaxErrors", DefaultMaxErrors().internal(), tasks.DefaultMaxErrors},
		{"CodeVerifyMismatch", CodeVerifyMismatch, tasks.CodeVerifyMismatch},
		{"CodeVerifyFailed", CodeVerifyFailed, tasks.CodeVerifyFailed},
		{"CodeVerifyUnavailable", CodeVerifyUnavailable, tasks.CodeVerifyUnavailable},
		{"CodeServerDeleted", CodeServerDeleted, tasks.CodeServerDeleted},
		{"CodeJobTimeout", CodeJobTimeout, tasks.CodeJobTimeout},
		{"CodePollUnknown", CodePollUnknown, tasks.CodePollUnknown},
		{"CodeMissingJob", CodeMissingJob, tasks.CodeMissingJob},
		{"CodeSubmitFailed", CodeSubmitFailed, tasks.CodeSubmitFailed},
		{"CodePollFailed", CodePollFailed, tasks.CodePollFailed},
		{"StateSucceeded", string(StateSucceeded), string(tasks.StateSucceeded)},
		{"StateCompletedWithErrors", string(StateCompletedWithErrors), string(tasks.StateCompletedWithErrors)},
		{"StateFailed", string(StateFailed), string(tasks.StateFailed)},
		{"StateCancelled", string(StateCancelled), string(tasks.StateCancelled)},
		{"StateRunning", string(StateRunning), string(tasks.StateRunning)},
		{"StatePaused", string(StatePaused), string(tasks.StatePaused)},
		{"OutcomePending", string(OutcomePending), string(tasks.OutcomePending)},
		{"OutcomeRunning", string(OutcomeRunning), string(tasks.OutcomeRunning)},
		{"OutcomeSucceeded", string(OutcomeSucceeded), string(tasks.OutcomeSucceeded)},
		{"OutcomeFailed", string(OutcomeFailed), string(tasks.OutcomeFailed)},
		{"OutcomeSkipped", string(OutcomeSkipped), string(tasks.OutcomeSkipped)},
		{"OutcomeCancelled", string(OutcomeCancelled), string(tasks.OutcomeCancelled)},
		{"HistoryCreated", string(HistoryCreated), string(tasks.HistoryCreated)},
		{"HistoryKeypairImported", string(HistoryKeypairImported), string(tasks.HistoryKeypairImported)},
		{"HistoryWaveStarted", string(HistoryWaveStarted), string(tasks.HistoryWaveStarted)},
		{"HistoryPaused", string(HistoryPaused), string(tasks.HistoryPaused)},
		{"HistoryResumed", string(HistoryResumed), string(tasks.HistoryResumed)},
		{"HistoryHaltedBudget", string(HistoryHaltedBudget), string(tasks.HistoryHaltedBudget)},
		{"HistoryHalted", string(HistoryHalted), string(tasks.HistoryHalted)},
		{"HistoryCancelled", string(HistoryCancelled), string(tasks.HistoryCancelled)},
		{"HistoryFinished", string(HistoryFinished), string(tasks.HistoryFinished)},
		{"HistoryKeypairRetired", string(HistoryKeypairRetired), string(tasks.HistoryKeypairRetired)},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %v, the pipeline's is %v", tt.name, tt.got, tt.want)
		}
	}
}
