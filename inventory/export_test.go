package inventory

// NextPage is nextPage, for tests.
var NextPage = nextPage
