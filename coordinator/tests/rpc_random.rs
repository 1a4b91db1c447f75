//! Randomised requests at the transport edge: arbitrary bytes decoded as the
//! messages peers send (step results, run steps, hellos, plan submissions)
//! and converted to domain types must never panic, and what is accepted is
//! within its caps. 256 cases per property in CI; run longer with
//! `PROPTEST_CASES=5000 cargo nextest run -p convoy-coordinator --test rpc_random`.

use convoy_common::model::{OUTCOME_MESSAGE_CAP, OUTCOME_OUTPUT_CAP};
use convoy_proto::v1 as pb;
use proptest::prelude::*;
use prost::Message;

fn cap_of(marker_len: usize, cap: usize) -> usize {
    cap + marker_len
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_step_results_convert_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(r) = pb::StepResult::decode(bytes.as_slice())
            && let Ok((id, outcome)) = convoy_wire::outcome::result_from_proto(r)
        {
            prop_assert!(!id.rollout().is_empty() && !id.entry().is_empty());
            prop_assert!(outcome.message.len() <= cap_of(32, OUTCOME_MESSAGE_CAP));
            prop_assert!(outcome.stdout_tail.len() <= cap_of(32, OUTCOME_OUTPUT_CAP));
        }
    }

    #[test]
    fn structured_step_results_with_huge_fields_are_capped(
        id in "[a-z0-9/]{1,40}",
        status in 0i32..8,
        message_len in 0usize..200_000,
        out_len in 0usize..200_000,
        exit_code in any::<i32>(),
    ) {
        let r = pb::StepResult {
            execution_id: id,
            status,
            exit_code,
            message: "m".repeat(message_len),
            stdout_tail: "o".repeat(out_len),
            stderr_tail: "é".repeat(out_len / 2),
            ..Default::default()
        };
        match convoy_wire::outcome::result_from_proto(r) {
            Ok((_, o)) => {
                prop_assert!(o.message.len() <= cap_of(32, OUTCOME_MESSAGE_CAP));
                prop_assert!(o.stdout_tail.len() <= cap_of(32, OUTCOME_OUTPUT_CAP));
                prop_assert!(o.stderr_tail.len() <= cap_of(32, OUTCOME_OUTPUT_CAP));
            }
            // Refused only for what it names: a status it does not know, or an id that is none.
            Err(e) => prop_assert!(e.to_string().contains("status") || e.to_string().contains("execution_id"), "{e}"),
        }
    }

    #[test]
    fn random_run_steps_convert_or_say_why(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(run) = pb::RunStep::decode(bytes.as_slice())
            && let Some(spec) = &run.step
        {
            let _ = convoy_wire::step::step_from_proto(&run.step_name, spec);
        }
    }

    #[test]
    fn random_hellos_and_plan_requests_decode_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(pb::AgentMessage { kind: Some(pb::agent_message::Kind::Hello(h)) }) = pb::AgentMessage::decode(bytes.as_slice()) {
            let _ = convoy_wire::agent::hello_from_proto(h);
        }
        if let Ok(req) = pb::SubmitPlanRequest::decode(bytes.as_slice()) {
            let _ = convoy_common::plan::parse_plan(&req.file_name, &req.plan_yaml);
        }
    }
}
