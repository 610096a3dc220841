//! The filter step as an AWS Lambda function (state `Filter` of statemachine/image_pipeline.asl.json).
//! Everything but the step's name is shared, in `aws::lambda::serve`: JSON logging,
//! configuration from the environment (naming every missing variable), SDK clients built
//! once per container, and step errors returned as the Diagnostic errorType the state
//! machine retries or catches.

#[tokio::main]
async fn main() -> Result<(), aws::lambda::Error> {
    aws::lambda::serve(pipeline::StepName::Filter).await
}
