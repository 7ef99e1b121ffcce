"""Reports of a certification: JUnit XML (junit-xml), the certificate (JSON and HTML with a
timeline per clause) and the evidence they link, written as the run goes so that a run killed
halfway leaves valid files covering what finished."""
