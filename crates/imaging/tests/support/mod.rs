pub mod corpus;
pub mod photos;
