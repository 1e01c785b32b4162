"""Static-graph network builders that hold exactly the publisher's parameter names."""
