"""Account self-service: changing the password, deleting the account, password resets."""
